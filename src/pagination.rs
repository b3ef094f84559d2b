//! Keyset pagination: opaque cursors and bounded page sizes, shared by every list.
use base64::Engine;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

pub const DEFAULT_PAGE_SIZE: usize = 20;
pub const MAX_PAGE_SIZE: usize = 100;

/// A forward page request: at most `first` items after the item the cursor names.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest<C = Uuid> {
    pub first: usize,
    pub after: Option<C>,
}

impl PageRequest {
    pub fn parse(first: Option<i32>, after: Option<&str>) -> ApiResult<Self> {
        Self::parse_with(first, after, decode_cursor)
    }
}

impl<C> PageRequest<C> {
    /// Like `parse`, for a list whose cursors `decode` reads.
    pub fn parse_with(first: Option<i32>, after: Option<&str>, decode: impl Fn(&str) -> Option<C>) -> ApiResult<Self> {
        let first = match first {
            None => DEFAULT_PAGE_SIZE,
            Some(n) if n >= 0 && (n as usize) <= MAX_PAGE_SIZE => n as usize,
            Some(_) => return Err(ApiError::validation("first", format!("must be between 0 and {MAX_PAGE_SIZE}"))),
        };
        let after = after
            .map(|c| decode(c).ok_or_else(|| ApiError::validation("after", "not a cursor from this API")))
            .transpose()?;
        Ok(PageRequest { first, after })
    }
}

/// One page of a keyset-paginated list.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_next_page: bool,
    pub has_previous_page: bool,
}

const CURSOR_PREFIX: &str = "k1:";

pub fn encode_cursor(id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{CURSOR_PREFIX}{id}"))
}

pub fn decode_cursor(cursor: &str) -> Option<Uuid> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = std::str::from_utf8(&raw).ok()?;
    text.strip_prefix(CURSOR_PREFIX)?.parse().ok()
}

/// Both directions of a Relay connection: `first`/`after` walk forward, `last`/`before` walk back.
#[derive(Debug, Clone, Copy)]
pub enum Window<C> {
    Forward { first: usize, after: Option<C> },
    Backward { last: usize, before: Option<C> },
}

impl<C> Window<C> {
    /// Validates the four Relay arguments; `decode` reads a cursor.
    pub fn parse(
        first: Option<i32>,
        after: Option<&str>,
        last: Option<i32>,
        before: Option<&str>,
        decode: impl Fn(&str) -> Option<C>,
    ) -> ApiResult<Self> {
        let size = |n: i32, field: &str| {
            if n >= 0 && (n as usize) <= MAX_PAGE_SIZE {
                Ok(n as usize)
            } else {
                Err(ApiError::validation(field, format!("must be between 0 and {MAX_PAGE_SIZE}")))
            }
        };
        let cursor = |c: Option<&str>, field: &str| {
            c.map(|c| decode(c).ok_or_else(|| ApiError::validation(field, "not a cursor from this API"))).transpose()
        };
        match (first, last) {
            (Some(_), Some(_)) => Err(ApiError::validation("last", "give `first` or `last`, not both")),
            (_, Some(last)) => {
                if after.is_some() {
                    return Err(ApiError::validation("after", "use `before` with `last`"));
                }
                Ok(Window::Backward { last: size(last, "last")?, before: cursor(before, "before")? })
            }
            (first, None) => {
                if before.is_some() {
                    return Err(ApiError::validation("before", "use `before` with `last`"));
                }
                Ok(Window::Forward {
                    first: first.map(|f| size(f, "first")).transpose()?.unwrap_or(DEFAULT_PAGE_SIZE),
                    after: cursor(after, "after")?,
                })
            }
        }
    }
}

const TIME_CURSOR_PREFIX: &str = "t1:";

/// A cursor on (time, id): the position in a list ordered by time with the id breaking ties.
pub fn encode_time_cursor(at: chrono::DateTime<chrono::Utc>, id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{TIME_CURSOR_PREFIX}{}:{id}", at.timestamp_micros()))
}

pub fn decode_time_cursor(cursor: &str) -> Option<(chrono::DateTime<chrono::Utc>, Uuid)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = std::str::from_utf8(&raw).ok()?.strip_prefix(TIME_CURSOR_PREFIX)?;
    let (micros, id) = text.split_once(':')?;
    Some((chrono::DateTime::from_timestamp_micros(micros.parse().ok()?)?, id.parse().ok()?))
}

const FEED_CURSOR_PREFIX: &str = "c1:";

/// A place in the feed's commit order: (commit position, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedPosition {
    pub commit: i64,
    pub id: Uuid,
}

/// What a feed client may resume from: a position, or a cursor handed out before feed cursors carried one (the id
/// alone; its position is looked up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedCursor {
    Position(FeedPosition),
    Id(Uuid),
}

pub fn encode_feed_cursor(position: FeedPosition) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{FEED_CURSOR_PREFIX}{}:{}", position.commit, position.id))
}

pub fn decode_feed_cursor(cursor: &str) -> Option<FeedCursor> {
    if let Some(id) = decode_cursor(cursor) {
        return Some(FeedCursor::Id(id));
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = std::str::from_utf8(&raw).ok()?.strip_prefix(FEED_CURSOR_PREFIX)?;
    let (commit, id) = text.split_once(':')?;
    Some(FeedCursor::Position(FeedPosition { commit: commit.parse().ok()?, id: id.parse().ok()? }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_foreign_text() {
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(id)), Some(id));
        assert_eq!(decode_cursor("not-a-cursor"), None);
        assert!(PageRequest::parse(Some(101), None).is_err());
        assert!(PageRequest::parse(Some(-1), None).is_err());
        assert_eq!(PageRequest::parse(None, None).map(|p| p.first).ok(), Some(DEFAULT_PAGE_SIZE));
        let at = chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        assert_eq!(decode_time_cursor(&encode_time_cursor(at, id)), Some((at, id)));
        assert!(Window::parse(Some(1), None, Some(1), None, decode_time_cursor).is_err());
        let position = FeedPosition { commit: 7_000_123, id };
        assert_eq!(decode_feed_cursor(&encode_feed_cursor(position)), Some(FeedCursor::Position(position)));
        assert_eq!(decode_feed_cursor(&encode_cursor(id)), Some(FeedCursor::Id(id)));
        assert_eq!(decode_feed_cursor(&encode_time_cursor(at, id)), None);
    }
}
