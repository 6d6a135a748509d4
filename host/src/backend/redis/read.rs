//! The read path on Redis: fenced lookups and fills, early-refresh claims, locks.

use std::time::Duration;

use redis::{Cmd, FromRedisValue};

use super::envelope::{self, Envelope};
use super::{evalsha, Failure, Redis};
use crate::backend::{Fill, Held, Hit, Look, Lookup};
use crate::error::Error;

/// What a lookup read: on a miss, the current tokens of the epoch and of each tag (`None`
/// where the key is absent), which fence the fill; on a hit, the early claim it took.
#[derive(Default)]
pub(crate) struct Seen {
    tokens: Vec<Option<String>>,
    claim: Option<String>,
}

fn ms(d: Duration) -> u64 {
    d.as_millis().max(1) as u64
}

fn get(key: &str) -> Cmd {
    let mut c = redis::cmd("GET");
    c.arg(key);
    c
}

/// `PEXPIRE key ms GT`: the key lives at least that long, never shorter than it would.
fn extend(key: &str, life: Duration) -> Cmd {
    let mut c = redis::cmd("PEXPIRE");
    c.arg(key).arg(ms(life)).arg("GT");
    c
}

impl Redis {
    /// The fresh entry under `key` filled under exactly `tags`. A sliding hit gives the entry
    /// its TTL again and its tags (and the epoch) their margin past it, in the same round trip.
    pub(super) async fn lookup_entry(
        &self,
        key: &str,
        tags: &[String],
        look: Look,
    ) -> Result<Lookup<Seen>, Error> {
        let (entry, now_ms, current) = if !self.cluster && look.slide.is_none() && !look.early {
            // The common hit: one MGET of the entry, the epoch and the tags.
            let mut c = redis::cmd("MGET");
            c.arg(key).arg(&self.keys.epoch);
            for t in tags {
                c.arg(self.keys.tag(t));
            }
            let mut values: Vec<Option<Vec<u8>>> = self.run(c).await?;
            let entry = if values.is_empty() {
                None
            } else {
                values.remove(0)
            };
            (entry, None, values)
        } else {
            let mut cmds = Vec::with_capacity(2 + tags.len() * 2);
            cmds.push(match (look.early, look.slide) {
                (true, slide) => {
                    let mut c = evalsha(&self.scripts.get_timed, key);
                    c.arg(slide.map_or(0, ms));
                    c
                }
                (false, Some(ttl)) => {
                    let mut c = redis::cmd("GETEX");
                    c.arg(key).arg("PX").arg(ms(ttl));
                    c
                }
                (false, None) => get(key),
            });
            cmds.push(get(&self.keys.epoch));
            for t in tags {
                cmds.push(get(&self.keys.tag(t)));
            }
            if let Some(ttl) = look.slide {
                let life = self.tag_life(ttl);
                cmds.push(extend(&self.keys.epoch, life));
                for t in tags {
                    cmds.push(extend(&self.keys.tag(t), life));
                }
            }
            let mut values = self.run_many(&cmds).await?.into_iter();
            let first = values.next().unwrap_or(redis::Value::Nil);
            let (entry, now) = if look.early {
                <(Option<Vec<u8>>, Option<u64>)>::from_redis_value(first)
                    .map_err(|e| Failure::Refused(e.into()))?
            } else {
                (
                    Option::<Vec<u8>>::from_redis_value(first).unwrap_or(None),
                    None,
                )
            };
            let current = values
                .take(1 + tags.len())
                .map(|v| Option::<Vec<u8>>::from_redis_value(v).unwrap_or(None))
                .collect();
            (entry, now, current)
        };
        // The value is served as a slice of the answer's buffer, not copied out of it.
        let entry = entry.map(bytes::Bytes::from);
        let env = entry.as_deref().and_then(Envelope::parse);
        let mut current = current;
        if let Some(env) = env.as_ref().filter(|e| {
            e.fence.len() > current.len() && e.has_tags(tags) && e.is_current_so_far(&current)
        }) {
            // Tags learned with the value (an HTTP response's surrogate keys), beyond the
            // rule's: their tokens, in a second round trip.
            let cmds: Vec<Cmd> = env
                .tags()
                .skip(tags.len())
                .map(|name| get(&self.keys.tag(&String::from_utf8_lossy(name))))
                .collect();
            current.extend(
                self.run_many(&cmds)
                    .await?
                    .into_iter()
                    .map(|v| Option::<Vec<u8>>::from_redis_value(v).unwrap_or(None)),
            );
        }
        let fresh = env
            .as_ref()
            .is_some_and(|env| env.has_tags(tags) && env.is_current(&current));
        let (Some(env), true) = (env, fresh) else {
            let tokens = current
                .into_iter()
                .map(|t| t.and_then(|b| String::from_utf8(b).ok()))
                .collect();
            return Ok(Lookup {
                hit: None,
                seen: Seen {
                    tokens,
                    claim: None,
                },
            });
        };
        // Early refresh: the entry's age by the server's own clock, and one claim per fill.
        let due = env.early_ms > 0
            && env.born_ms > 0
            && now_ms.is_some_and(|now| now.saturating_sub(env.born_ms) >= env.early_ms);
        let claim = if due {
            self.claim_early(key, env.fill_id).await
        } else {
            None
        };
        Ok(Lookup {
            hit: Some(Hit {
                value: entry.as_ref().expect("parsed from it").slice_ref(env.value),
                early_due: claim.is_some(),
            }),
            seen: Seen {
                tokens: Vec::new(),
                claim,
            },
        })
    }

    /// One host refreshes a fill early; the others keep serving it. The claim names the fill,
    /// so the next fill can be claimed as soon as it lands.
    async fn claim_early(&self, key: &str, fill_id: u64) -> Option<String> {
        let claim = self.keys.early(key, fill_id);
        let mut c = redis::cmd("SET");
        c.arg(&claim)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ms(self.opts.lock_ttl));
        matches!(self.run::<Option<String>>(c).await, Ok(Some(_))).then_some(claim)
    }

    pub(super) async fn release_claim(&self, seen: &Seen) {
        if let Some(claim) = &seen.claim {
            let mut c = redis::cmd("DEL");
            c.arg(claim);
            let _ = self.run::<i64>(c).await;
        }
    }

    /// Tokens of the epoch and of `tags`, creating the missing ones; `seen` holds those a
    /// lookup just read (only the missing ones cost a command). Their keys live at least the
    /// entry's TTL plus the margin.
    pub(super) async fn fence_tags(
        &self,
        tags: &[String],
        seen: Option<&Seen>,
        ttl: Duration,
    ) -> Result<Vec<String>, Error> {
        let life = ms(self.tag_life(ttl));
        let mut out: Vec<String> = Vec::with_capacity(1 + tags.len());
        let mut need: Vec<(usize, String)> = Vec::new();
        for i in 0..=tags.len() {
            match seen
                .and_then(|s| s.tokens.get(i))
                .and_then(|t| t.as_ref())
                .filter(|t| !t.is_empty())
            {
                Some(tok) => out.push(tok.clone()),
                None => {
                    out.push(String::new());
                    let key = match i {
                        0 => self.keys.epoch.clone(),
                        _ => self.keys.tag(&tags[i - 1]),
                    };
                    need.push((i, key));
                }
            }
        }
        if !need.is_empty() {
            let cmds: Vec<Cmd> = need
                .iter()
                .map(|(_, key)| {
                    let mut c = evalsha(&self.scripts.fence, key);
                    c.arg(self.token()).arg(life);
                    c
                })
                .collect();
            let made = self.run_many(&cmds).await?;
            for ((i, _), v) in need.iter().zip(made) {
                out[*i] = String::from_redis_value(v).map_err(|e| Failure::Refused(e.into()))?;
            }
        }
        Ok(out)
    }

    /// Stores a value fenced by `tokens` (the epoch's, then each tag's), and extends the life
    /// of the epoch and of every tag key past the entry's: in one round trip.
    pub(super) async fn fill_entry(
        &self,
        key: &str,
        tags: &[String],
        value: &[u8],
        tokens: &[String],
        fill: Fill,
    ) -> Result<(), Error> {
        let fill_id = self.fill_id();
        let mut cmds = Vec::with_capacity(2 + tags.len());
        match fill.early {
            Some(early) => {
                // The server's clock goes in as the entry's birth: early refresh compares it
                // with that same clock, never with a host's.
                let rest = envelope::encode_after_born(
                    fill_id,
                    ms(early),
                    &tokens[0],
                    tags,
                    &tokens[1..],
                    value,
                );
                let mut c = evalsha(&self.scripts.fill_born, key);
                c.arg(&envelope::MAGIC[..]).arg(rest).arg(ms(fill.ttl));
                cmds.push(c);
            }
            None => {
                let env = envelope::encode(fill_id, &tokens[0], tags, &tokens[1..], value);
                let mut c = redis::cmd("SET");
                c.arg(key).arg(env).arg("PX").arg(ms(fill.ttl));
                cmds.push(c);
            }
        }
        let life = self.tag_life(fill.ttl);
        cmds.push(extend(&self.keys.epoch, life));
        for t in tags {
            cmds.push(extend(&self.keys.tag(t), life));
        }
        self.run_many(&cmds).await?;
        Ok(())
    }

    /// Takes the cross-host lock of `key`.
    pub(super) async fn take_lock(&self, key: &str) -> Result<Option<Held>, Error> {
        let owner = self.token();
        let mut c = redis::cmd("SET");
        c.arg(self.keys.lock(key))
            .arg(&owner)
            .arg("NX")
            .arg("PX")
            .arg(ms(self.opts.lock_ttl));
        let r: Option<String> = self.run(c).await?;
        Ok(r.map(|_| Held(Some(owner))))
    }

    pub(super) async fn extend_held_lock(&self, key: &str, held: &Held) -> bool {
        let Some(owner) = &held.0 else { return true };
        let mut c = evalsha(&self.scripts.extend, &self.keys.lock(key));
        c.arg(owner).arg(ms(self.opts.lock_ttl));
        matches!(self.run::<i64>(c).await, Ok(1))
    }

    pub(super) async fn release_lock(&self, key: &str, held: Held) {
        let Some(owner) = held.0 else { return };
        let mut c = evalsha(&self.scripts.unlock, &self.keys.lock(key));
        c.arg(owner);
        // A lock we fail to release expires by itself.
        let _: Result<i64, _> = self.run(c).await;
    }

    /// Whether an envelope read by a direct operation is still fresh: a second round trip for
    /// its epoch and tags (the direct operation does not know them; the envelope names them).
    pub(super) async fn envelope_is_fresh(&self, env: &Envelope<'_>) -> Result<bool, Error> {
        let mut keys = vec![self.keys.epoch.clone()];
        for t in env.tags() {
            keys.push(self.keys.tag(&String::from_utf8_lossy(t)));
        }
        let current: Vec<Option<Vec<u8>>> = if self.cluster {
            let cmds: Vec<Cmd> = keys.iter().map(|k| get(k)).collect();
            self.run_many(&cmds)
                .await?
                .into_iter()
                .map(|v| Option::<Vec<u8>>::from_redis_value(v).unwrap_or(None))
                .collect()
        } else {
            let mut c = redis::cmd("MGET");
            c.arg(&keys);
            self.run(c).await?
        };
        Ok(env.is_current(&current))
    }
}
