//! The attribute macros of [cachelet](https://docs.rs/cachelet): `#[cachelet::read("op")]` and
//! `#[cachelet::write("op")]`. Use them through the `cachelet` crate, which re-exports them and
//! documents them.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens, TokenTree};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{parse_macro_input, FnArg, GenericParam, ItemFn, LitStr, Pat, ReturnType, Type};

/// Caches an async function through a read op of the policies. See `cachelet::read`.
#[proc_macro_attribute]
pub fn read(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Read, attr, item)
}

/// Applies a write op of the policies after an async function succeeds. See `cachelet::write`.
#[proc_macro_attribute]
pub fn write(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Write, attr, item)
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Read,
    Write,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Write => "write",
        }
    }
}

/// What a parameter is to the op.
enum Role {
    /// An argument of the op, under this name.
    Arg(String),
    /// Not part of the arguments (a handle, a connection).
    Skip,
    /// The cache to use.
    Cache,
}

struct Param {
    ident: syn::Ident,
    ty: Type,
    role: Role,
}

fn expand(kind: Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut func = parse_macro_input!(item as ItemFn);
    let out = match parse(kind, attr.into(), &mut func) {
        Ok((op, params)) => generate(kind, &op, &params, &func),
        // The function is kept as written, so the only error is the macro's.
        Err(e) => {
            for input in func.sig.inputs.iter_mut() {
                if let FnArg::Typed(pt) = input {
                    pt.attrs.retain(|a| !a.path().is_ident("cachelet"));
                }
            }
            let e = e.to_compile_error();
            quote!(#e #func)
        }
    };
    out.into()
}

fn parse(kind: Kind, attr: Tokens, func: &mut ItemFn) -> syn::Result<(LitStr, Vec<Param>)> {
    let usage = format!(
        "expected the op's name: #[cachelet::{}(\"op_name\")]",
        kind.name()
    );
    let op: LitStr = syn::parse2(attr.clone()).map_err(|_| {
        let span = if attr.is_empty() {
            Span::call_site()
        } else {
            attr.span()
        };
        syn::Error::new(span, &usage)
    })?;
    if op.value().is_empty() {
        return Err(syn::Error::new(op.span(), "the op's name is empty"));
    }
    let sig = &func.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span,
            format!(
                "#[cachelet::{}] goes on an `async fn`: its body is the {}",
                kind.name(),
                match kind {
                    Kind::Read => "loader",
                    Kind::Write => "action",
                }
            ),
        ));
    }
    if let Some(p) = sig
        .generics
        .params
        .iter()
        .find(|p| !matches!(p, GenericParam::Lifetime(_)))
    {
        return Err(syn::Error::new(
            p.span(),
            "a cached function cannot be generic over types or constants: its op has one \
             set of argument types (write a wrapper per type)",
        ));
    }
    if let ReturnType::Default = sig.output {
        return Err(syn::Error::new(
            sig.paren_token.span.close(),
            "a cached function returns `Result<T, E>`",
        ));
    }
    let mut params = Vec::new();
    let mut cache_seen = false;
    for input in func.sig.inputs.iter_mut() {
        let pt = match input {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new(
                    r.span(),
                    "#[cachelet] goes on free functions, not methods: move the body into a \
                     function and pass what it needs from `self` as parameters",
                ))
            }
            FnArg::Typed(pt) => pt,
        };
        let mut role = None;
        let mut kept = Vec::new();
        for a in pt.attrs.drain(..) {
            if !a.path().is_ident("cachelet") {
                kept.push(a);
                continue;
            }
            if role.is_some() {
                return Err(syn::Error::new(
                    a.span(),
                    "one #[cachelet(...)] attribute per parameter",
                ));
            }
            role = Some(param_role(&a)?);
        }
        pt.attrs = kept;
        let ident = match &*pt.pat {
            Pat::Ident(p) if p.subpat.is_none() => p.ident.clone(),
            other => {
                return Err(syn::Error::new(
                    other.span(),
                    "give this parameter a plain name: the op's arguments are named after \
                     the parameters",
                ))
            }
        };
        let role = role
            .unwrap_or_else(|| Role::Arg(ident.to_string().trim_start_matches("r#").to_string()));
        if let Role::Cache = role {
            if cache_seen {
                return Err(syn::Error::new(
                    pt.span(),
                    "only one parameter can be the cache",
                ));
            }
            cache_seen = true;
        }
        if let (Role::Arg(_), Type::Reference(r)) = (&role, &*pt.ty) {
            if r.mutability.is_some() {
                return Err(syn::Error::new(
                    pt.ty.span(),
                    "an argument of the op cannot be `&mut`: skip it with #[cachelet(skip)] \
                     if it is not part of the key",
                ));
            }
        }
        params.push(Param {
            ident,
            ty: (*pt.ty).clone(),
            role,
        });
    }
    for (i, p) in params.iter().enumerate() {
        let Role::Arg(name) = &p.role else { continue };
        let twice = params[..i]
            .iter()
            .any(|q| matches!(&q.role, Role::Arg(n) if n == name));
        if twice {
            return Err(syn::Error::new(
                p.ident.span(),
                format!("a second parameter for the op's argument `{name}`"),
            ));
        }
    }
    Ok((op, params))
}

fn param_role(a: &syn::Attribute) -> syn::Result<Role> {
    let mut role = None;
    a.parse_nested_meta(|m| {
        if m.path.is_ident("skip") {
            role = Some(Role::Skip);
            Ok(())
        } else if m.path.is_ident("cache") {
            role = Some(Role::Cache);
            Ok(())
        } else if m.path.is_ident("rename") {
            let name: LitStr = m.value()?.parse()?;
            if name.value().is_empty() {
                return Err(syn::Error::new(name.span(), "the argument's name is empty"));
            }
            role = Some(Role::Arg(name.value()));
            Ok(())
        } else {
            Err(m.error(
                "unknown #[cachelet] parameter option: expected `skip`, `cache` or \
                 `rename = \"name\"`",
            ))
        }
    })?;
    role.ok_or_else(|| {
        syn::Error::new(
            a.span(),
            "expected #[cachelet(skip)], #[cachelet(cache)] or #[cachelet(rename = \"name\")]",
        )
    })
}

/// Whether a type borrows (a reference, a lifetime, an `impl Trait`): then the body cannot be
/// run in the background, and the read is scoped.
fn borrows(ty: &Type) -> bool {
    fn scan(ts: Tokens) -> bool {
        ts.into_iter().any(|t| match t {
            TokenTree::Punct(p) => p.as_char() == '&' || p.as_char() == '\'',
            TokenTree::Ident(i) => i == "impl" || i == "dyn",
            TokenTree::Group(g) => scan(g.stream()),
            TokenTree::Literal(_) => false,
        })
    }
    scan(quote!(#ty))
}

fn generate(kind: Kind, op: &LitStr, params: &[Param], func: &ItemFn) -> Tokens {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = func;
    let name = &sig.ident;
    let body_fn = format_ident!("__cachelet_{}", name);
    let mut inner_sig = sig.clone();
    inner_sig.ident = body_fn.clone();
    let function = quote!(::core::concat!(
        ::core::module_path!(),
        "::",
        ::core::stringify!(#name)
    ));

    let cache = match params.iter().find(|p| matches!(p.role, Role::Cache)) {
        Some(p) => {
            let (ident, ty) = (&p.ident, &p.ty);
            quote_spanned!(ty.span()=> ::core::option::Option::Some(
                ::cachelet::__private::CacheArg::Given(::core::clone::Clone::clone(
                    ::core::borrow::Borrow::<::cachelet::Cache>::borrow(&#ident),
                ))
            ))
        }
        None => quote!(::cachelet::__private::installed()),
    };
    let args = params.iter().filter_map(|p| match &p.role {
        Role::Arg(n) => {
            let (ident, ty) = (&p.ident, &p.ty);
            Some(quote_spanned!(ty.span()=> .arg(#n, &#ident)))
        }
        _ => None,
    });
    let idents: Vec<_> = params.iter().map(|p| &p.ident).collect();
    let call = quote!(move || #body_fn(#(#idents),*));

    let args = quote!(::cachelet::__private::ArgsBuilder::new() #(#args)* .finish());
    // A read calls the cache's own `read` in the function's body: one future less to build
    // and move on the hit path than through a helper of its own.
    let run = match kind {
        Kind::Read => {
            let read = if params.iter().any(|p| borrows(&p.ty)) {
                quote!(read_scoped)
            } else {
                quote!(read)
            };
            quote! {
                match ::cachelet::__private::prepare(#cache, #function, #args) {
                    ::core::option::Option::Some((__cache, __args)) => {
                        __cache.get().#read(#op, &__args, #call).await
                    }
                    ::core::option::Option::None => (#call)().await,
                }
            }
        }
        Kind::Write => quote! {
            ::cachelet::__private::write(#cache, #function, #op, #args, #call).await
        },
    };
    let registration = match kind {
        Kind::Read => registration(op, params, &body_fn, &function),
        Kind::Write => Tokens::new(),
    };
    quote! {
        #(#attrs)*
        #vis #sig {
            // The body, as written (a parameter only the macro uses, such as the cache, is
            // unused here).
            #[allow(unused_variables, clippy::too_many_arguments)]
            #inner_sig #block
            #registration
            #run
        }
    }
}

/// The recache loader of a read function: registered at link time under its op. Not emitted
/// when a skipped parameter is `&mut` (nothing can be provided for it: recache needs
/// `Cache::register_loader` then).
fn registration(op: &LitStr, params: &[Param], body_fn: &syn::Ident, function: &Tokens) -> Tokens {
    if params
        .iter()
        .any(|p| matches!(&p.ty, Type::Reference(r) if r.mutability.is_some()))
    {
        return Tokens::new();
    }
    let mut lets = Vec::new();
    let mut passed = Vec::new();
    for (i, p) in params.iter().enumerate() {
        let var = format_ident!("__p{}", i);
        let (owned, by_ref) = match &p.ty {
            Type::Reference(r) => {
                let elem = &r.elem;
                (quote!(<#elem as ::std::borrow::ToOwned>::Owned), true)
            }
            ty => (quote!(#ty), false),
        };
        let span = p.ty.span();
        lets.push(match &p.role {
            Role::Arg(n) => quote_spanned!(span=>
                let #var: #owned = ::cachelet::__private::arg(&__args, #n)?;
            ),
            Role::Skip => quote_spanned!(span=>
                let #var: #owned = ::cachelet::__private::provided(&__cache)?;
            ),
            Role::Cache => quote_spanned!(span=>
                let #var: ::cachelet::Cache = ::core::clone::Clone::clone(&__cache);
            ),
        });
        passed.push(if by_ref {
            quote!(::std::borrow::Borrow::borrow(&#var))
        } else {
            quote!(#var)
        });
    }
    let load_fn = format_ident!("{}_load", body_fn);
    quote! {
        fn #load_fn(
            __cache: &::cachelet::Cache,
            __args: ::cachelet::Args,
        ) -> ::cachelet::__private::LoadFuture {
            let __cache = ::core::clone::Clone::clone(__cache);
            ::std::boxed::Box::pin(async move {
                #(#lets)*
                ::cachelet::__private::loaded(#body_fn(#(#passed),*).await)
            })
        }
        ::cachelet::__private::inventory::submit! {
            ::cachelet::__private::Registered {
                op: #op,
                function: #function,
                load: #load_fn,
            }
        }
    }
}
