//! WASI's blocking I/O calls, answered at once.
//!
//! wasmtime-wasi links the `wasi:io` calls that may wait (`pollable.block`, `poll`, the
//! `blocking-*` stream methods and the stream destructors) as async host functions, and one async
//! import makes every call into the component go through a fiber. A policy has nothing to wait
//! for: its context grants no files, no sockets, and its standard streams are empty or discard
//! what they get, so these calls complete the first time they are polled. This module links
//! them again as plain functions that poll once; one that would have to wait (a guest sleeping
//! on a clock, say) traps instead, with a message saying so, rather than holding a request past
//! the policy's deadline.
//!
//! With these, a component that imports only the WASI a language's standard library needs (Rust's
//! `std` on wasm32-wasip2: streams, environment, exit, terminals) is called without a fiber.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use wasmtime::component::{Linker, Resource, ResourceTable, ResourceType};
use wasmtime::StoreContextMut;
use wasmtime_wasi::{
    p2::{DynInputStream, DynOutputStream, DynPollable, StreamError},
    WasiView,
};
use wasmtime_wasi_io::bindings::wasi::io::poll::{Host as _, HostPollable};
use wasmtime_wasi_io::bindings::wasi::io::streams::{
    self as wit, Host as _, HostInputStream, HostOutputStream,
};

/// The `wasi:io` version wasmtime-wasi links (imports of any 0.2.x resolve to it).
const IO: &str = "0.2.12";

/// Completes `f` if it is ready when first polled; otherwise the guest traps.
fn at_once<F: Future>(call: &str, f: F) -> wasmtime::Result<F::Output> {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Ok(v),
        Poll::Pending => Err(wasmtime::format_err!(
            "{call} would wait: a policy cannot block (it has no timers to sleep on and no \
             I/O to wait for)"
        )),
    }
}

/// A stream call's outcome in WIT terms (an error value pushed into the table).
fn stream_result<T>(
    table: &mut ResourceTable,
    r: Result<T, StreamError>,
) -> wasmtime::Result<(Result<T, wit::StreamError>,)> {
    match r {
        Ok(v) => Ok((Ok(v),)),
        Err(e) => Ok((Err(table.convert_stream_error(e)?),)),
    }
}

fn table<'a, T: WasiView>(store: &'a mut StoreContextMut<'_, T>) -> &'a mut ResourceTable {
    store.data_mut().ctx().table
}

/// Links the waiting calls of `wasi:io` again as plain functions (see the module docs).
/// `linker` already has wasmtime-wasi's definitions; these shadow them.
pub(crate) fn link_io_at_once<T: WasiView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);

    let mut poll = linker.instance(&format!("wasi:io/poll@{IO}"))?;
    poll.func_wrap(
        "poll",
        |mut s: StoreContextMut<'_, T>, (list,): (Vec<Resource<DynPollable>>,)| {
            let t = table(&mut s);
            Ok((at_once("wasi:io/poll.poll", t.poll(list))??,))
        },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut s: StoreContextMut<'_, T>, (p,): (Resource<DynPollable>,)| {
            let t = table(&mut s);
            at_once("wasi:io/poll pollable.block", HostPollable::block(t, p))?
        },
    )?;
    poll.func_wrap(
        "[method]pollable.ready",
        |mut s: StoreContextMut<'_, T>, (p,): (Resource<DynPollable>,)| {
            let t = table(&mut s);
            Ok((at_once(
                "wasi:io/poll pollable.ready",
                HostPollable::ready(t, p),
            )??,))
        },
    )?;

    let mut streams = linker.instance(&format!("wasi:io/streams@{IO}"))?;
    streams.resource(
        "input-stream",
        ResourceType::host::<DynInputStream>(),
        |mut s: StoreContextMut<'_, T>, rep| {
            let t = table(&mut s);
            let r = Resource::<DynInputStream>::new_own(rep);
            at_once("dropping an input-stream", HostInputStream::drop(t, r))?
        },
    )?;
    streams.resource(
        "output-stream",
        ResourceType::host::<DynOutputStream>(),
        |mut s: StoreContextMut<'_, T>, rep| {
            let t = table(&mut s);
            let r = Resource::<DynOutputStream>::new_own(rep);
            at_once("dropping an output-stream", HostOutputStream::drop(t, r))?
        },
    )?;
    streams.func_wrap(
        "[method]input-stream.blocking-read",
        |mut s: StoreContextMut<'_, T>, (r, len): (Resource<DynInputStream>, u64)| {
            let t = table(&mut s);
            let out = at_once("blocking-read", HostInputStream::blocking_read(t, r, len))?;
            stream_result(t, out)
        },
    )?;
    streams.func_wrap(
        "[method]input-stream.blocking-skip",
        |mut s: StoreContextMut<'_, T>, (r, len): (Resource<DynInputStream>, u64)| {
            let t = table(&mut s);
            let out = at_once("blocking-skip", HostInputStream::blocking_skip(t, r, len))?;
            stream_result(t, out)
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-write-and-flush",
        |mut s: StoreContextMut<'_, T>, (w, bytes): (Resource<DynOutputStream>, Vec<u8>)| {
            let t = table(&mut s);
            let out = at_once(
                "blocking-write-and-flush",
                HostOutputStream::blocking_write_and_flush(t, w, bytes),
            )?;
            stream_result(t, out)
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-write-zeroes-and-flush",
        |mut s: StoreContextMut<'_, T>, (w, len): (Resource<DynOutputStream>, u64)| {
            let t = table(&mut s);
            let out = at_once(
                "blocking-write-zeroes-and-flush",
                HostOutputStream::blocking_write_zeroes_and_flush(t, w, len),
            )?;
            stream_result(t, out)
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-flush",
        |mut s: StoreContextMut<'_, T>, (w,): (Resource<DynOutputStream>,)| {
            let t = table(&mut s);
            let out = at_once("blocking-flush", HostOutputStream::blocking_flush(t, w))?;
            stream_result(t, out)
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-splice",
        |mut s: StoreContextMut<'_, T>,
         (w, r, len): (Resource<DynOutputStream>, Resource<DynInputStream>, u64)| {
            let t = table(&mut s);
            let out = at_once(
                "blocking-splice",
                HostOutputStream::blocking_splice(t, w, r, len),
            )?;
            stream_result(t, out)
        },
    )?;

    linker.allow_shadowing(false);
    Ok(())
}
