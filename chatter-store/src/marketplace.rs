//! Marketplace rules shared by the backends: status checks, rating checks, the template an
//! install creates, clear conflict messages.

use chatter_core::Error;
use chatter_core::store::{
    ListingRecord, ListingStatus, ListingVersionRecord, NewTemplate, StoreErrorKind, StoreResult,
};
use serde_json::Value;

use chatter_core::store::NewListing;
use chatter_core::store::marketplace::check_slug;

use crate::common::{Limits, conflict, invalid, require};

/// A new listing's own checks (before any database work); returns its category (`custom` when
/// empty).
pub(crate) fn check_new_listing(limits: &Limits, new: &NewListing) -> StoreResult<String> {
    check_slug(&new.slug)?;
    require("title", &new.title)?;
    require("publisher_id", &new.publisher_id)?;
    limits.text("readme", &new.readme)?;
    Ok(if new.category.is_empty() {
        "custom".to_owned()
    } else {
        new.category.clone()
    })
}

/// A unique-violation on the slug as a clear conflict.
pub(crate) fn duplicate_slug(e: Error, slug: &str) -> Error {
    if e.store_kind() == Some(StoreErrorKind::Conflict) {
        conflict(format!("a listing with slug `{slug}` already exists"))
    } else {
        e
    }
}

/// A second rating by the same user as a clear conflict.
pub(crate) fn duplicate_rating(e: Error, listing: &str, user: &str) -> Error {
    if e.store_kind() == Some(StoreErrorKind::Conflict) {
        conflict(format!(
            "user `{user}` already rated listing `{listing}`; delete the rating to rate again"
        ))
    } else {
        e
    }
}

/// Whether `set_listing_status` may move `current` to `to`.
pub(crate) fn check_transition(current: &ListingRecord, to: ListingStatus) -> StoreResult<()> {
    if !current.status.can_transition_to(to) {
        let how = if matches!(to, ListingStatus::Approved | ListingStatus::Rejected)
            && current.status == ListingStatus::Submitted
        {
            " (approval and rejection are moderation reviews)"
        } else {
            ""
        };
        return Err(conflict(format!(
            "listing `{}` is {}; it cannot become {to}{how}",
            current.slug, current.status
        )));
    }
    if to == ListingStatus::Submitted && current.latest_version == 0 {
        return Err(conflict(format!(
            "listing `{}` has no version yet; publish one before submitting it",
            current.slug
        )));
    }
    Ok(())
}

/// Refuses unless `listing` is in one of `allowed` (`what`: "installed", "reviewed", ...).
pub(crate) fn refuse_unless(
    listing: &ListingRecord,
    allowed: &[ListingStatus],
    what: &str,
) -> StoreResult<()> {
    if allowed.contains(&listing.status) {
        return Ok(());
    }
    let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
    Err(conflict(format!(
        "listing `{}` is {}; only {} listings can be {what}",
        listing.slug,
        listing.status,
        names.join(" or ")
    )))
}

/// A version's own checks (before any database work).
pub(crate) fn check_version(limits: &Limits, snapshot: &Value, changelog: &str) -> StoreResult<()> {
    if !snapshot.is_object() {
        return Err(invalid("a version snapshot must be a JSON object"));
    }
    limits.json("snapshot", snapshot)?;
    limits.text("changelog", changelog)
}

/// A rating's own checks (before any database work).
pub(crate) fn check_rating(user: &str, rating: i32) -> StoreResult<()> {
    require("user_id", user)?;
    if !(1..=5).contains(&rating) {
        return Err(invalid(format!("a rating is 1 to 5 (got {rating})")));
    }
    Ok(())
}

/// Only approved listings are rated, and not by their publisher.
pub(crate) fn check_can_rate(listing: &ListingRecord, user: &str) -> StoreResult<()> {
    refuse_unless(listing, &[ListingStatus::Approved], "rated")?;
    if listing.publisher_id == user {
        return Err(invalid(format!(
            "publishers cannot rate their own listing `{}`",
            listing.slug
        )));
    }
    Ok(())
}

/// The statuses a search matches (`approved` when none are given).
pub(crate) fn status_list(statuses: &[ListingStatus]) -> Vec<String> {
    if statuses.is_empty() {
        vec![ListingStatus::Approved.as_str().to_owned()]
    } else {
        statuses.iter().map(|s| s.as_str().to_owned()).collect()
    }
}

/// The template an install of `version` creates for `user`: the snapshot's blueprint, private,
/// with the listing's template as its base.
pub(crate) fn installed_template(
    listing: &ListingRecord,
    version: &ListingVersionRecord,
    user: &str,
    name: Option<String>,
) -> StoreResult<NewTemplate> {
    let snapshot = &version.snapshot;
    let text = |key: &str| snapshot.get(key).and_then(Value::as_str).map(str::to_owned);
    let name = name
        .or_else(|| text("name"))
        .unwrap_or_else(|| listing.slug.clone());
    let tags = snapshot
        .get("tags")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_else(|| listing.tags.clone());
    Ok(NewTemplate {
        id: None,
        owner_id: Some(user.to_owned()),
        name,
        description: text("description").or_else(|| Some(listing.summary.clone())),
        category: text("category").unwrap_or_else(|| listing.category.clone()),
        spec: snapshot
            .get("spec")
            .cloned()
            .unwrap_or_else(|| Value::Object(serde_json::Map::new())),
        tags,
        is_builtin: false,
        is_public: false,
        base_template_id: listing.template_id.clone(),
    })
}
