//! Direct operations (full keys of the namespace) and scans.
//!
//! A read-path entry met by a direct operation answers as on the memory backend: its value
//! while its tags are current, nothing once they are not.

use std::time::Duration;

use redis::cluster_async::ClusterConnection;
use redis::FromRedisValue;

use super::envelope::Envelope;
use super::{evalsha, Conn, Failure, Redis};
use crate::backend::glob_escape;
use crate::error::Error;

fn ms(d: Duration) -> u64 {
    d.as_millis().max(1) as u64
}

impl Redis {
    /// A raw value as a direct operation sees it: a read-path entry gives its value while
    /// fresh, nothing once stale.
    async fn unwrap_direct(&self, raw: Option<Vec<u8>>) -> Result<Option<bytes::Bytes>, Error> {
        let Some(raw) = raw else { return Ok(None) };
        let raw = bytes::Bytes::from(raw);
        match Envelope::parse(&raw) {
            None => Ok(Some(raw.clone())),
            Some(env) if self.envelope_is_fresh(&env).await? => Ok(Some(raw.slice_ref(env.value))),
            Some(_) => Ok(None),
        }
    }

    pub(super) async fn get_direct(&self, key: &str) -> Result<Option<bytes::Bytes>, Error> {
        let mut c = redis::cmd("GET");
        c.arg(key);
        let v: Option<Vec<u8>> = self.run(c).await?;
        self.unwrap_direct(v).await
    }

    pub(super) async fn set_direct(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        if_absent: bool,
    ) -> Result<bool, Error> {
        let mut c = redis::cmd("SET");
        c.arg(key).arg(value).arg("PX").arg(ms(ttl));
        if if_absent {
            c.arg("NX").arg("GET");
        }
        if !if_absent {
            let _: Option<String> = self.run(c).await?;
            return Ok(true);
        }
        // SET NX GET: stored when the key was absent (nil back); otherwise the value that is
        // there, which only counts if it is fresh (a stale read-path entry is no entry).
        let old: Option<Vec<u8>> = self.run(c).await?;
        let Some(old) = old else { return Ok(true) };
        match Envelope::parse(&old) {
            Some(env) if !self.envelope_is_fresh(&env).await? => {
                // Replace it, unless someone else did meanwhile.
                let mut c = evalsha(&self.scripts.replace, key);
                c.arg(&old[..]).arg(value).arg(ms(ttl));
                Ok(self.run::<i64>(c).await? == 1)
            }
            _ => Ok(false),
        }
    }

    pub(super) async fn get_delete_direct(&self, key: &str) -> Result<Option<bytes::Bytes>, Error> {
        let mut c = redis::cmd("GETDEL");
        c.arg(key);
        let v: Option<Vec<u8>> = self.run(c).await?;
        self.unwrap_direct(v).await
    }

    /// INCRBY and a new counter's TTL in one script: a counter never lives without a TTL.
    pub(super) async fn incr_direct(
        &self,
        key: &str,
        name: &str,
        by: i64,
        ttl: Duration,
    ) -> Result<i64, Error> {
        let mut c = evalsha(&self.scripts.incr, key);
        c.arg(by).arg(ms(ttl));
        match self.run::<i64>(c).await {
            Ok(n) => Ok(n),
            Err(Failure::Refused(e)) if e.to_string().contains("not an integer") => {
                Err(Error::Value {
                    key: name.to_string(),
                    problem: "holds a value that is not an integer".into(),
                })
            }
            Err(Failure::Refused(e)) if e.to_string().contains("overflow") => Err(Error::Value {
                key: name.to_string(),
                problem: format!("+ {by} overflows a 64-bit integer"),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the keys of the namespace `ns` matching `pattern` (a glob relative to it):
    /// `SCAN` on the server (every master of a cluster) and `UNLINK` a page at a time, so the
    /// server is never blocked by one big command. The engine's keys are outside `ns`.
    pub(super) async fn delete_matching(&self, ns: &str, pattern: &str) -> Result<u64, Error> {
        self.ready().await?;
        let full = format!("{}{pattern}", glob_escape(ns));
        let r = self.scan_delete(&full).await;
        self.count(&r);
        Ok(r?)
    }

    async fn scan_delete(&self, pattern: &str) -> Result<u64, Failure> {
        use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
        // The nodes to scan: the server, or each master by address.
        let nodes: Vec<Option<(String, u16)>> = match &self.conn {
            Conn::Single(_) => vec![None],
            Conn::Cluster(c) => self
                .cluster_masters(c)
                .await?
                .into_iter()
                .map(Some)
                .collect(),
        };
        let mut deleted = 0;
        for node in nodes {
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(500);
                let page = match (&self.conn, &node) {
                    (Conn::Cluster(c), Some((host, port))) => {
                        self.commands
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port: *port,
                        });
                        let mut c = c.clone();
                        let fut = c.route_command(scan, route);
                        match tokio::time::timeout(self.opts.timeout, fut).await {
                            Ok(r) => r.map_err(super::classify)?,
                            Err(_) => return Err(super::timed_out(self.opts.timeout)),
                        }
                    }
                    _ => self.raw::<redis::Value>(scan).await?,
                };
                let (next, keys): (u64, Vec<String>) = FromRedisValue::from_redis_value(page)
                    .map_err(|e| Failure::Refused(e.into()))?;
                deleted += self.unlink(&keys).await?;
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(deleted)
    }

    async fn cluster_masters(&self, c: &ClusterConnection) -> Result<Vec<(String, u16)>, Failure> {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SLOTS");
        self.commands
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let slots: Vec<redis::Value> =
            match tokio::time::timeout(self.opts.timeout, cmd.query_async(&mut c.clone())).await {
                Ok(r) => r.map_err(super::classify)?,
                Err(_) => return Err(super::timed_out(self.opts.timeout)),
            };
        let mut masters = Vec::new();
        for s in slots {
            let redis::Value::Array(parts) = s else {
                continue;
            };
            if let Some(redis::Value::Array(node)) = parts.get(2) {
                let host: Option<String> = node
                    .first()
                    .and_then(|v| FromRedisValue::from_redis_value(v.clone()).ok());
                let port: Option<u16> = node
                    .get(1)
                    .and_then(|v| FromRedisValue::from_redis_value(v.clone()).ok());
                if let (Some(h), Some(p)) = (host, port) {
                    if !masters.contains(&(h.clone(), p)) {
                        masters.push((h, p));
                    }
                }
            }
        }
        Ok(masters)
    }
}
