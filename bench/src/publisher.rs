//! Publishes marked payloads to a target over HTTP: at a set rate, or as fast as it can.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use indicatif::ProgressBar;
use tokio::task::JoinSet;

use crate::{
    marker,
    target::{API_KEY, Target},
};

#[derive(Clone)]
pub struct Publisher {
    http: reqwest::Client,
    target: Target,
    url: String,
    payload_bytes: usize,
}

impl Publisher {
    /// Publishes to the topic of the node at `base`.
    pub fn new(target: Target, base: &str, payload_bytes: usize) -> Result<Self> {
        let url = target.publish_url(base);
        Ok(Publisher { http: crate::http_client()?, target, url, payload_bytes })
    }

    /// Publishes sequence `seq`, stamped with the time now.
    pub async fn publish(&self, seq: u64) -> Result<()> {
        let payload = marker::payload(seq, marker::now_us(), self.payload_bytes);
        let request = match self.target {
            Target::Switchboard => self
                .http
                .post(&self.url)
                .header("X-Api-Key", API_KEY)
                .json(&serde_json::json!({ "message": payload })),
            _ => self.http.post(&self.url).body(payload),
        };
        let response = request.send().await?;
        if !response.status().is_success() {
            bail!("{} answered {}", self.url, response.status());
        }
        Ok(())
    }

    /// Publishes `from..to` at `rate` per second.
    pub async fn at_rate(
        &self,
        from: u64,
        to: u64,
        rate: f64,
        progress: &ProgressBar,
    ) -> Result<()> {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        for seq in from..to {
            tick.tick().await;
            self.publish(seq).await?;
            progress.inc(1);
        }
        Ok(())
    }

    /// Publishes from `from` on, as fast as `concurrency` requests in flight allow, for
    /// `duration`; returns the end of the published range.
    pub async fn saturate(
        &self,
        from: u64,
        duration: Duration,
        concurrency: usize,
        progress: &ProgressBar,
    ) -> Result<u64> {
        let next = Arc::new(AtomicU64::new(from));
        let until = Instant::now() + duration;
        let mut workers = JoinSet::new();
        for _ in 0..concurrency {
            let (publisher, next, progress) = (self.clone(), next.clone(), progress.clone());
            workers.spawn(async move {
                while Instant::now() < until {
                    publisher.publish(next.fetch_add(1, Ordering::Relaxed)).await?;
                    progress.inc(1);
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = workers.join_next().await {
            done??;
        }
        Ok(next.load(Ordering::Relaxed))
    }
}
