//! Where entries live. The memory backend is in-process; Redis joins it as a second backend.

pub(crate) mod memory;
pub(crate) mod redis;

/// Redis-style glob matching: `*`, `?`, `[abc]`, `[a-z]`, `[^a]` and `\` escapes.
pub(crate) fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let (mut star_p, mut star_i) = (None, 0);
    while i < s.len() {
        if p < pat.len() {
            match pat[p] {
                b'*' => {
                    star_p = Some(p);
                    star_i = i;
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(pat, p, s[i]) {
                        if matched {
                            p = next;
                            i += 1;
                            continue;
                        }
                    } else if s[i] == b'[' {
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pat.len() && pat[p + 1] == s[i] => {
                    p += 2;
                    i += 1;
                    continue;
                }
                b'\\' if p + 1 < pat.len() => {}
                c if c == s[i] => {
                    p += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star_p {
            Some(sp) => {
                p = sp + 1;
                star_i += 1;
                i = star_i;
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pat[start] == '['`: (matched, index after `]`).
fn class(pat: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut j = start + 1;
    let negate = pat.get(j) == Some(&b'^');
    if negate {
        j += 1;
    }
    let mut matched = false;
    let mut first = true;
    while j < pat.len() && (pat[j] != b']' || first) {
        first = false;
        let mut lo = pat[j];
        if lo == b'\\' && j + 1 < pat.len() {
            j += 1;
            lo = pat[j];
        }
        if j + 2 < pat.len() && pat[j + 1] == b'-' && pat[j + 2] != b']' {
            let hi = pat[j + 2];
            if (lo.min(hi)..=lo.max(hi)).contains(&c) {
                matched = true;
            }
            j += 3;
        } else {
            if lo == c {
                matched = true;
            }
            j += 1;
        }
    }
    (j < pat.len()).then_some((matched != negate, j + 1))
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_match_like_redis() {
        let m = |p: &str, s: &str| glob_match(p.as_bytes(), s.as_bytes());
        assert!(m("user:*:profile", "user:42:profile"));
        assert!(!m("user:*:profile", "user:42:settings"));
        assert!(m("user:1:*", "user:1:profile"));
        assert!(!m("user:1:*", "user:12:profile"));
        assert!(m("h?llo", "hello") && !m("h?llo", "hllo"));
        assert!(m("h[ae]llo", "hallo") && !m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo") && !m("h[^e]llo", "hello"));
        assert!(m("h[a-c]llo", "hbllo") && !m("h[a-c]llo", "hdllo"));
        assert!(m("a\\*b", "a*b") && !m("a\\*b", "axb"));
        assert!(m("*", "") && m("**", "x") && !m("", "x"));
    }
}
