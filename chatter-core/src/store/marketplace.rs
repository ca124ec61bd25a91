//! The template marketplace: listings, their immutable versions, moderation reviews, user
//! ratings, installs and search (`marketplace_*` tables).
//!
//! A listing is published by a user from one of their templates. Its status moves
//! `draft → submitted → approved | rejected`; an approved listing may be `unlisted` (and
//! relisted), any listing may be `removed` (final); a rejected one may be resubmitted, and a
//! submitted or rejected one withdrawn to `draft`. `submitted → approved | rejected` happens only
//! through a moderation review ([`MarketplaceStore::review_listing`]), which records the review
//! and the status in one transaction.
//!
//! A version is a snapshot of the template (`{name, description, category, tags, spec}`, see
//! [`crate::templates::lifecycle`]) with its content hash (SHA-256 of the snapshot's canonical
//! JSON) and a changelog; versions are numbered from 1 and never change once written.
//!
//! Ratings are 1–5, one per user and listing: rating a listing twice is a `Conflict` (delete the
//! rating to rate again). The listing's average and count are recomputed in the rating's
//! transaction. Installing copies a version's snapshot into the user's templates (private, with
//! `base_template_id` = the listing's template) and counts the install, in one transaction; only
//! approved listings can be rated or installed.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Page, StoreResult, TemplateRecord, string_enum};

string_enum! {
    /// Status of a listing (see the [module docs](self) for the transitions).
    ListingStatus {
        /// Being prepared by its publisher; not visible to others.
        Draft => "draft",
        /// Waiting for a moderation review.
        Submitted => "submitted",
        /// Approved: searchable, installable, ratable.
        Approved => "approved",
        /// Rejected by a moderator.
        Rejected => "rejected",
        /// Approved, then hidden by its publisher: not searchable, installable or ratable;
        /// relisting makes it approved again.
        Unlisted => "unlisted",
        /// Taken down; final.
        Removed => "removed",
    }
}

impl ListingStatus {
    /// The statuses a listing may move to `self` from with
    /// [`MarketplaceStore::set_listing_status`] (approval and rejection go through
    /// [`MarketplaceStore::review_listing`] instead).
    #[must_use]
    pub fn allowed_predecessors(self) -> &'static [ListingStatus] {
        use ListingStatus::{Approved, Draft, Rejected, Removed, Submitted, Unlisted};
        match self {
            Draft => &[Submitted, Rejected],
            Submitted => &[Draft, Rejected],
            Approved => &[Unlisted],
            Rejected => &[],
            Unlisted => &[Approved],
            Removed => &[Draft, Submitted, Approved, Rejected, Unlisted],
        }
    }

    /// Whether [`MarketplaceStore::set_listing_status`] may move a listing from `self` to `to`.
    #[must_use]
    pub fn can_transition_to(self, to: ListingStatus) -> bool {
        to.allowed_predecessors().contains(&self)
    }
}

string_enum! {
    /// A moderation decision.
    ReviewDecision {
        /// The listing becomes approved.
        Approved => "approved",
        /// The listing becomes rejected.
        Rejected => "rejected",
    }
}

/// A listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListingRecord {
    /// Id (ULID).
    pub id: String,
    /// Unique, URL-friendly name.
    pub slug: String,
    /// The user who publishes it.
    pub publisher_id: String,
    /// The publisher's template it was made from (`None` once that template is deleted).
    pub template_id: Option<String>,
    /// Title (searched).
    pub title: String,
    /// One-paragraph summary (searched).
    pub summary: String,
    /// Long description (Markdown).
    pub readme: String,
    /// Template category.
    pub category: String,
    /// Tags (searched, filterable).
    pub tags: Vec<String>,
    /// License name (`MIT`, `Apache-2.0`, ...).
    pub license: String,
    /// Status.
    pub status: ListingStatus,
    /// The newest version's number (0 before the first).
    pub latest_version: i64,
    /// Average rating (0 without ratings).
    pub rating_avg: f64,
    /// Number of ratings.
    pub rating_count: i64,
    /// Number of installs.
    pub install_count: i64,
    /// Creation time (ms).
    pub created_at: i64,
    /// Last change (ms).
    pub updated_at: i64,
    /// When it was last approved (ms).
    pub approved_at: Option<i64>,
}

/// What [`MarketplaceStore::create_listing`] needs. The listing starts as a `draft`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NewListing {
    /// Id to use; a new ULID when `None`.
    pub id: Option<String>,
    /// Unique slug: lower-case letters, digits and `-`, 1–100 characters.
    pub slug: String,
    /// The publisher.
    pub publisher_id: String,
    /// The template it is made from.
    pub template_id: Option<String>,
    /// Title (not empty).
    pub title: String,
    /// Summary.
    pub summary: String,
    /// Readme.
    pub readme: String,
    /// Category.
    pub category: String,
    /// Tags.
    pub tags: Vec<String>,
    /// License.
    pub license: String,
}

/// A partial update of a listing's text; `None` fields are left as they are.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ListingUpdate {
    /// New title.
    pub title: Option<String>,
    /// New summary.
    pub summary: Option<String>,
    /// New readme.
    pub readme: Option<String>,
    /// New category.
    pub category: Option<String>,
    /// New tags.
    pub tags: Option<Vec<String>>,
    /// New license.
    pub license: Option<String>,
}

/// One immutable version of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListingVersionRecord {
    /// The listing.
    pub listing_id: String,
    /// From 1.
    pub version: i64,
    /// The template snapshot (`{name, description, category, tags, spec}`).
    pub snapshot: Value,
    /// SHA-256 (hex) of the snapshot's canonical JSON.
    pub content_hash: String,
    /// What changed.
    pub changelog: String,
    /// When it was published (ms).
    pub created_at: i64,
}

/// A moderation review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewRecord {
    /// Id (ULID).
    pub id: String,
    /// The listing.
    pub listing_id: String,
    /// The moderator.
    pub reviewer_id: String,
    /// The decision.
    pub decision: ReviewDecision,
    /// Why.
    pub comment: String,
    /// The version reviewed.
    pub version: i64,
    /// When (ms).
    pub created_at: i64,
}

/// A user's rating of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatingRecord {
    /// The listing.
    pub listing_id: String,
    /// The user.
    pub user_id: String,
    /// 1–5.
    pub rating: i32,
    /// Optional text.
    pub comment: String,
    /// When (ms).
    pub created_at: i64,
}

/// What [`MarketplaceStore::install_listing`] needs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NewInstall {
    /// The listing.
    pub listing_id: String,
    /// The installing user.
    pub user_id: String,
    /// The version to install; the latest when `None`.
    pub version: Option<i64>,
    /// Name of the new template; the snapshot's name when `None`.
    pub name: Option<String>,
}

/// An install: which version of which listing became which template of whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallRecord {
    /// Id (ULID).
    pub id: String,
    /// The listing.
    pub listing_id: String,
    /// The version installed.
    pub version: i64,
    /// The user.
    pub user_id: String,
    /// The template created (`None` once the user deletes it).
    pub template_id: Option<String>,
    /// When (ms).
    pub created_at: i64,
}

/// Search order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ListingSort {
    /// Best text match first (newest first without a query).
    #[default]
    Relevance,
    /// Highest average rating first (then most ratings).
    Rating,
    /// Most installed first.
    Installs,
    /// Newest first.
    Newest,
}

/// What [`MarketplaceStore::search_listings`] looks for.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ListingSearch {
    /// Words that must all appear in the title, summary or tags (stemmed, case-insensitive);
    /// `None` or blank matches every listing.
    pub query: Option<String>,
    /// Only this category.
    pub category: Option<String>,
    /// Only listings with this tag.
    pub tag: Option<String>,
    /// Only this publisher's listings.
    pub publisher_id: Option<String>,
    /// Only these statuses; empty means `approved` (what the public marketplace shows).
    pub statuses: Vec<ListingStatus>,
    /// Order.
    pub sort: ListingSort,
}

/// Storage of the marketplace.
#[async_trait]
pub trait MarketplaceStore: Send + Sync {
    /// Creates a draft listing.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a bad slug or an empty title or publisher, `Conflict` for a taken
    /// slug, `NotFound` for an unknown template.
    async fn create_listing(&self, new: NewListing) -> StoreResult<ListingRecord>;

    /// Reads a listing by id.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn get_listing(&self, id: &str) -> StoreResult<Option<ListingRecord>>;

    /// Reads a listing by slug.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn get_listing_by_slug(&self, slug: &str) -> StoreResult<Option<ListingRecord>>;

    /// Changes a listing's text (not allowed once removed).
    ///
    /// # Errors
    ///
    /// `NotFound`, `Conflict` for a removed listing, `InvalidInput` for an empty title.
    async fn update_listing(&self, id: &str, update: ListingUpdate) -> StoreResult<ListingRecord>;

    /// Moves a listing to `to` when [`ListingStatus::can_transition_to`] allows it; moving to
    /// `submitted` needs at least one version.
    ///
    /// # Errors
    ///
    /// `NotFound`, `Conflict` naming the current status for a transition not allowed.
    async fn set_listing_status(&self, id: &str, to: ListingStatus) -> StoreResult<ListingRecord>;

    /// Publishes the next version (latest + 1) of a listing that is not removed.
    ///
    /// # Errors
    ///
    /// `NotFound`, `Conflict` for a removed listing, `InvalidInput` for a snapshot that is not
    /// an object, `PayloadTooLarge`.
    async fn add_listing_version(
        &self,
        listing_id: &str,
        snapshot: Value,
        changelog: &str,
    ) -> StoreResult<ListingVersionRecord>;

    /// Every version of a listing, oldest first.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn list_listing_versions(
        &self,
        listing_id: &str,
    ) -> StoreResult<Vec<ListingVersionRecord>>;

    /// Records a moderation review of a `submitted` listing and moves it to the decision's
    /// status, in one transaction.
    ///
    /// # Errors
    ///
    /// `NotFound`, `Conflict` when the listing is not submitted, `InvalidInput` for an empty
    /// reviewer.
    async fn review_listing(
        &self,
        listing_id: &str,
        reviewer_id: &str,
        decision: ReviewDecision,
        comment: &str,
    ) -> StoreResult<(ReviewRecord, ListingRecord)>;

    /// The reviews of a listing, oldest first.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn list_reviews(&self, listing_id: &str) -> StoreResult<Vec<ReviewRecord>>;

    /// Records `user_id`'s rating (1–5) of an approved listing and recomputes its average and
    /// count, in one transaction.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a rating outside 1–5 or the publisher rating their own listing,
    /// `NotFound`, `Conflict` when the listing is not approved or the user already rated it.
    async fn rate_listing(
        &self,
        listing_id: &str,
        user_id: &str,
        rating: i32,
        comment: &str,
    ) -> StoreResult<ListingRecord>;

    /// Deletes `user_id`'s rating (recomputing the average); returns whether there was one.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn delete_rating(&self, listing_id: &str, user_id: &str) -> StoreResult<bool>;

    /// The ratings of a listing, newest first.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn list_ratings(&self, listing_id: &str, page: Page) -> StoreResult<Vec<RatingRecord>>;

    /// Installs a version of an approved listing: creates the user's template from the
    /// snapshot (private, `base_template_id` = the listing's template), records the install and
    /// increments the install count, in one transaction.
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown listing or version, `Conflict` when the listing is not
    /// approved or the user already has a template of that name.
    async fn install_listing(
        &self,
        install: NewInstall,
    ) -> StoreResult<(InstallRecord, TemplateRecord)>;

    /// The installs of a listing, newest first.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn list_installs(&self, listing_id: &str, page: Page) -> StoreResult<Vec<InstallRecord>>;

    /// Searches listings (full text over title, summary and tags; filters; order; page).
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn search_listings(
        &self,
        search: &ListingSearch,
        page: Page,
    ) -> StoreResult<Vec<ListingRecord>>;
}

/// Checks a slug: 1–100 characters of `a-z`, `0-9` and `-`, not starting or ending with `-`.
///
/// # Errors
///
/// `InvalidInput` saying what is wrong.
pub fn check_slug(slug: &str) -> StoreResult<()> {
    let ok = !slug.is_empty()
        && slug.len() <= 100
        && slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(crate::Error::store(
            super::StoreErrorKind::InvalidInput,
            format!(
                "slug `{slug}` must be 1-100 characters of a-z, 0-9 and `-`, not starting or ending with `-`"
            ),
        ))
    }
}

/// The content hash of a version snapshot: SHA-256 (hex) of its canonical JSON.
#[must_use]
pub fn content_hash(snapshot: &Value) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(crate::templates::canonical_json(snapshot).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_transitions_follow_the_documented_flow() {
        use ListingStatus::{Approved, Draft, Rejected, Removed, Submitted, Unlisted};
        let allowed: Vec<(ListingStatus, ListingStatus)> = ListingStatus::ALL
            .iter()
            .flat_map(|from| ListingStatus::ALL.iter().map(move |to| (*from, *to)))
            .filter(|(from, to)| from.can_transition_to(*to))
            .collect();
        assert_eq!(
            allowed,
            [
                (Draft, Submitted),
                (Draft, Removed),
                (Submitted, Draft),
                (Submitted, Removed),
                (Approved, Unlisted),
                (Approved, Removed),
                (Rejected, Draft),
                (Rejected, Submitted),
                (Rejected, Removed),
                (Unlisted, Approved),
                (Unlisted, Removed),
            ]
        );
    }

    #[test]
    fn slugs_are_checked() {
        for ok in ["a", "support-bot", "v2-helper-3"] {
            assert!(check_slug(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Upper", "with space", "ü", &"a".repeat(101)] {
            let err = check_slug(bad).unwrap_err();
            assert_eq!(
                err.store_kind(),
                Some(crate::store::StoreErrorKind::InvalidInput)
            );
        }
    }

    #[test]
    fn content_hash_ignores_key_order() {
        let a = content_hash(&json!({"name": "x", "spec": {"b": 1, "a": [1, 2]}}));
        let b = content_hash(&json!({"spec": {"a": [1, 2], "b": 1}, "name": "x"}));
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        assert_ne!(a, content_hash(&json!({"name": "y"})));
    }
}
