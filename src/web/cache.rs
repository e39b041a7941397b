//! Rendered pages, cached per language and per version of the data they show.
//!
//! A page is keyed by the identity of the cached data it was rendered from (the `Arc` the
//! incident read caches hand out) and holds that `Arc`, so the key cannot be reused while the
//! entry lives. When the incident caches load afresh (their lifetime ran out, or a command
//! changed something), the next request renders once, single-flight, and everyone else gets
//! the same bytes. Entry lifetimes follow the mode, as the incident caches' do.
//!
//! Pages with a form are cached with markers where the per-request values go (the CSRF token,
//! the idempotency key); [`Page::fill`] puts them in, so no token is ever shared.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use moka::future::Cache;

use super::i18n::Lang;
use crate::http::ApiError;
use crate::incident::{ModeHandle, ModeLifetime};
use crate::telemetry::{CacheCounts, CacheTally};

/// The page caches, named as in the `cache` label of `reliefline_cache_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageCacheName {
    Home,
    Status,
    ReportForm,
    Feed,
}

impl PageCacheName {
    pub fn label(self) -> &'static str {
        match self {
            Self::Home => "home_page",
            Self::Status => "status_page",
            Self::ReportForm => "report_form",
            Self::Feed => "status_feed",
        }
    }
}

/// Per-request values a cached page has room for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Csrf,
    IdempotencyKey,
}

/// A rendered page: text with slots between its parts.
pub struct Page {
    parts: Vec<String>,
    slots: Vec<Slot>,
    /// The page as sent when it has no slots: each answer shares these bytes, uncopied.
    whole: Option<Bytes>,
    /// The data the page was rendered from; keeps the key's address from being reused.
    _source: Arc<dyn Any + Send + Sync>,
}

impl Page {
    /// Cut `html` at every slot marker.
    fn cut(html: &str, markers: &Markers, source: Arc<dyn Any + Send + Sync>) -> Self {
        let mut parts = Vec::new();
        let mut slots = Vec::new();
        let mut rest = html;
        loop {
            let next = [
                (rest.find(&markers.csrf), Slot::Csrf, markers.csrf.len()),
                (
                    rest.find(&markers.idempotency),
                    Slot::IdempotencyKey,
                    markers.idempotency.len(),
                ),
            ]
            .into_iter()
            .filter_map(|(at, slot, len)| at.map(|at| (at, slot, len)))
            .min_by_key(|(at, _, _)| *at);
            let Some((at, slot, len)) = next else {
                parts.push(rest.to_owned());
                break;
            };
            parts.push(rest[..at].to_owned());
            slots.push(slot);
            rest = &rest[at + len..];
        }
        let whole = slots
            .is_empty()
            .then(|| Bytes::from(parts.concat().into_bytes()));
        Self {
            parts,
            slots,
            whole,
            _source: source,
        }
    }

    /// The page with this request's values in its slots.
    pub fn fill(&self, csrf: &str, idempotency_key: &str) -> Bytes {
        if let Some(whole) = &self.whole {
            return whole.clone();
        }
        let mut out =
            String::with_capacity(self.parts.iter().map(String::len).sum::<usize>() + 128);
        for (i, part) in self.parts.iter().enumerate() {
            out.push_str(part);
            match self.slots.get(i) {
                Some(Slot::Csrf) => out.push_str(csrf),
                Some(Slot::IdempotencyKey) => out.push_str(idempotency_key),
                None => {}
            }
        }
        Bytes::from(out.into_bytes())
    }
}

/// Marker text rendered into cacheable pages where a per-request value goes; random per
/// process so no page content can imitate one.
pub struct Markers {
    pub csrf: String,
    pub idempotency: String,
}

impl Markers {
    fn new() -> Self {
        let mut nonce = [0u8; 12];
        rand::fill(&mut nonce);
        let nonce = hex::encode(nonce);
        Self {
            csrf: format!("slot-csrf-{nonce}"),
            idempotency: format!("slot-idem-{nonce}"),
        }
    }
}

type Key = (PageCacheName, Lang, usize, usize);

pub struct PageCache {
    pages: Cache<Key, Arc<Page>>,
    tallies: [CacheTally; 4],
    markers: Markers,
}

/// Rendered pages kept at most: a few pages per language, plus one form per incident
/// people open it for.
const CAPACITY: u64 = 2_000;

impl PageCache {
    pub fn new(mode: &ModeHandle, normal: Duration, incident: Duration) -> Self {
        Self {
            pages: Cache::builder()
                .max_capacity(CAPACITY)
                .expire_after(ModeLifetime::new(mode, normal, incident))
                .build(),
            tallies: [
                PageCacheName::Home,
                PageCacheName::Status,
                PageCacheName::ReportForm,
                PageCacheName::Feed,
            ]
            .map(|name| CacheTally::new(name.label())),
            markers: Markers::new(),
        }
    }

    pub fn markers(&self) -> &Markers {
        &self.markers
    }

    pub fn counts(&self, name: PageCacheName) -> CacheCounts {
        self.tallies[name as usize].counts()
    }

    /// The page `name` in `lang` for the data `sources`, rendered by `render` when not cached.
    /// `sources` are the data the page shows; `keep` holds them alive with the entry.
    pub async fn get<R>(
        &self,
        name: PageCacheName,
        lang: Lang,
        sources: (usize, usize),
        keep: Arc<dyn Any + Send + Sync>,
        render: R,
    ) -> Result<Arc<Page>, ApiError>
    where
        R: FnOnce(&Markers) -> Result<String, askama::Error>,
    {
        let loaded = AtomicBool::new(false);
        let markers = &self.markers;
        let result = self
            .pages
            .try_get_with((name, lang, sources.0, sources.1), async {
                loaded.store(true, Ordering::Relaxed);
                let html = render(markers)?;
                Ok::<_, askama::Error>(Arc::new(Page::cut(&html, markers, keep)))
            })
            .await;
        self.tallies[name as usize].record(loaded.load(Ordering::Relaxed));
        result.map_err(|e| ApiError::Internal(anyhow::anyhow!("rendering a page: {e}")))
    }
}

/// The address of shared data, as a cache key part.
pub fn identity<T: ?Sized>(data: &Arc<T>) -> usize {
    Arc::as_ptr(data).cast::<()>() as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn slots_are_filled_per_request() {
        let markers = Markers::new();
        let html = format!(
            "<input value=\"{}\"><p>x</p><input value=\"{}\"><b>{}</b>",
            markers.csrf, markers.idempotency, markers.csrf
        );
        let page = Page::cut(&html, &markers, Arc::new(()));
        assert_eq!(
            page.fill("T", "K"),
            "<input value=\"T\"><p>x</p><input value=\"K\"><b>T</b>"
        );
        let plain = Page::cut("<p>no slots</p>", &markers, Arc::new(()));
        assert_eq!(plain.fill("T", "K"), "<p>no slots</p>");
    }

    #[tokio::test]
    async fn one_rendering_per_version_of_the_data() {
        let cache = PageCache::new(
            &ModeHandle::new(),
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        let data = Arc::new(1u32);
        let renders = AtomicU64::new(0);
        let render = |_: &Markers| {
            renders.fetch_add(1, Ordering::Relaxed);
            Ok("<p>1</p>".to_owned())
        };
        for _ in 0..5 {
            let key = (identity(&data), 0);
            let page = cache
                .get(PageCacheName::Status, Lang::Ko, key, data.clone(), render)
                .await
                .unwrap();
            assert_eq!(page.fill("", ""), "<p>1</p>");
        }
        let newer = Arc::new(2u32);
        let key = (identity(&newer), 0);
        cache
            .get(PageCacheName::Status, Lang::Ko, key, newer.clone(), render)
            .await
            .unwrap();
        cache
            .get(PageCacheName::Status, Lang::En, key, newer.clone(), render)
            .await
            .unwrap();
        assert_eq!(renders.load(Ordering::Relaxed), 3);
        assert_eq!(
            cache.counts(PageCacheName::Status),
            CacheCounts { hits: 4, misses: 3 }
        );
    }
}
