//! The fleet's policies in Redis (see [`crate::policy::fleet`]), all under the engine's
//! prefix `{prefix}:{version}~`, where no caller, guest or rule reaches:
//! - `~policy:{hash}` — a pushed component's bytes, named by their SHA-256.
//! - `~policies` — a hash: policy name → its current push (JSON).
//! - `~policies:history:{name}` — a list of its pushes, newest first (the last 20).
//! - `~policies:generation` — bumped by every push, rollback and removal: hosts compare it.
//! - `~hosts` — a hash: host id → what it runs (JSON, with the time of the report).
//! - `~policies:changed` — a pub/sub channel: each change publishes its generation there.
//!
//! Every command names one key (a cluster routes each by its own); none goes through the
//! circuit, which only the read and write paths drive. A following host subscribes on a
//! connection of its own, to the server or to one node of a cluster (PUBLISH reaches every
//! node of a cluster), moving to the next node when it loses it.

use std::sync::Weak;
use std::time::Duration;

use futures_util::StreamExt;
use redis::Cmd;

use super::Redis;
use crate::error::Error;

impl Redis {
    fn fleet_key(&self, rest: &str) -> String {
        format!("{}{rest}", self.keys.engine)
    }

    async fn fleet<T: redis::FromRedisValue>(&self, cmd: Cmd) -> Result<T, Error> {
        self.raw(cmd).await.map_err(Error::from)
    }

    fn fleet_channel(&self) -> String {
        self.fleet_key("policies:changed")
    }

    /// Announces a change (its generation) to the subscribed hosts.
    pub(crate) async fn fleet_publish(&self, generation: u64) -> Result<(), Error> {
        let mut c = redis::cmd("PUBLISH");
        c.arg(self.fleet_channel()).arg(generation);
        self.fleet::<i64>(c).await.map(|_| ())
    }

    /// Subscribes to the announcements, in the background, for as long as `told` lives:
    /// `told` is notified for each one, and each time the subscription is made (a change
    /// may have been announced while it was not). A lost or refused subscription is made
    /// again after a back-off (50 ms doubling to 5 s), on the next node of a cluster.
    pub(crate) fn fleet_subscribe(&self, told: Weak<tokio::sync::Notify>) {
        let (clients, channel) = (self.subscribers.clone(), self.fleet_channel());
        let limit = self.opts.timeout.max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            for node in (0..clients.len()).cycle() {
                let subscribing = async {
                    let mut ps = clients[node].get_async_pubsub().await?;
                    ps.subscribe(&channel).await?;
                    Ok::<_, redis::RedisError>(ps)
                };
                match tokio::time::timeout(limit, subscribing).await {
                    Ok(Ok(ps)) => {
                        backoff = Duration::from_millis(50);
                        let mut messages = ps.into_on_message();
                        // Just subscribed: one check catches what was announced before.
                        let mut news = true;
                        loop {
                            if news {
                                let Some(told) = told.upgrade() else { return };
                                told.notify_one();
                            }
                            // Wakes every second to see whether the cache is still there.
                            match tokio::time::timeout(Duration::from_secs(1), messages.next())
                                .await
                            {
                                Ok(Some(_)) => news = true,
                                Ok(None) => break,
                                Err(_) if told.strong_count() == 0 => return,
                                Err(_) => news = false,
                            }
                        }
                        tracing::debug!("pushed policies: subscription lost; subscribing again");
                    }
                    Ok(Err(e)) => tracing::debug!(
                        "pushed policies: cannot subscribe ({}); the periodic check stands in",
                        crate::error::chain(&e)
                    ),
                    Err(_) => tracing::debug!(
                        "pushed policies: cannot subscribe (no answer within {limit:?}); the \
                         periodic check stands in"
                    ),
                }
                if told.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
    }

    /// `GET` of an engine key (`policy:{hash}`, `policies:generation`).
    pub(crate) async fn fleet_get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let mut c = redis::cmd("GET");
        c.arg(self.fleet_key(key));
        self.fleet(c).await
    }

    /// `SET` of an engine key, without expiry.
    pub(crate) async fn fleet_set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        let mut c = redis::cmd("SET");
        c.arg(self.fleet_key(key)).arg(value);
        self.fleet::<()>(c).await
    }

    /// `INCR`: the new value.
    pub(crate) async fn fleet_incr(&self, key: &str) -> Result<u64, Error> {
        let mut c = redis::cmd("INCR");
        c.arg(self.fleet_key(key));
        self.fleet(c).await
    }

    /// Every field of a hash.
    pub(crate) async fn fleet_hgetall(&self, key: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let mut c = redis::cmd("HGETALL");
        c.arg(self.fleet_key(key));
        let map: std::collections::BTreeMap<String, Vec<u8>> = self.fleet(c).await?;
        Ok(map.into_iter().collect())
    }

    pub(crate) async fn fleet_hset(
        &self,
        key: &str,
        field: &str,
        value: &[u8],
    ) -> Result<(), Error> {
        let mut c = redis::cmd("HSET");
        c.arg(self.fleet_key(key)).arg(field).arg(value);
        self.fleet::<()>(c).await
    }

    /// Whether the field was there.
    pub(crate) async fn fleet_hdel(&self, key: &str, field: &str) -> Result<bool, Error> {
        let mut c = redis::cmd("HDEL");
        c.arg(self.fleet_key(key)).arg(field);
        Ok(self.fleet::<u64>(c).await? > 0)
    }

    /// Deletes a key.
    pub(crate) async fn fleet_del(&self, key: &str) -> Result<(), Error> {
        let mut c = redis::cmd("DEL");
        c.arg(self.fleet_key(key));
        self.fleet::<()>(c).await
    }

    /// A list, head first.
    pub(crate) async fn fleet_list(&self, key: &str) -> Result<Vec<Vec<u8>>, Error> {
        let mut c = redis::cmd("LRANGE");
        c.arg(self.fleet_key(key)).arg(0).arg(-1);
        self.fleet(c).await
    }

    /// Pushes `value` at the head of a list and keeps its first `keep` items.
    pub(crate) async fn fleet_list_push(
        &self,
        key: &str,
        value: &[u8],
        keep: usize,
    ) -> Result<(), Error> {
        let key = self.fleet_key(key);
        let mut c = redis::cmd("LPUSH");
        c.arg(&key).arg(value);
        self.fleet::<()>(c).await?;
        let mut c = redis::cmd("LTRIM");
        c.arg(&key).arg(0).arg(keep.saturating_sub(1));
        self.fleet::<()>(c).await
    }

    /// Removes the head of a list.
    pub(crate) async fn fleet_list_pop(&self, key: &str) -> Result<(), Error> {
        let mut c = redis::cmd("LPOP");
        c.arg(self.fleet_key(key));
        self.fleet::<Option<Vec<u8>>>(c).await.map(|_| ())
    }
}
