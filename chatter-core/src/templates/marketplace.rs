//! Publishing templates to the marketplace and installing them, on any [`Store`] (see
//! [`crate::store::marketplace`] for the listing model and its status flow).

use serde_json::{Value, json};

use super::lifecycle::{get_visible, spec_of, validate_template};
use crate::error::{Error, Result};
use crate::store::marketplace::content_hash;
use crate::store::{
    InstallRecord, ListingRecord, ListingVersionRecord, NewInstall, NewListing, Store,
    StoreErrorKind, TemplateRecord,
};

/// What a marketplace version holds: the template as its owner sees it
/// (`{name, description, category, tags, spec}`), without ids, owner or flags.
pub fn snapshot_of(record: &TemplateRecord) -> Value {
    json!({
        "name": record.name,
        "description": record.description,
        "category": record.category,
        "tags": record.tags,
        "spec": record.spec,
    })
}

/// `user`'s own, non-built-in template `id`, checked to be valid.
async fn publishable(store: &dyn Store, user: &str, id: &str) -> Result<TemplateRecord> {
    let record = get_visible(store, user, id).await?;
    if record.is_builtin || record.owner_id.as_deref() != Some(user) {
        return Err(Error::Template {
            message: format!(
                "template `{}` is not yours to publish; fork it first",
                record.name
            ),
        });
    }
    let spec = spec_of(&record)?;
    let check = validate_template(&serde_json::to_value(&spec).unwrap_or(Value::Null));
    if !check.is_valid {
        return Err(Error::Template {
            message: format!(
                "template `{}` is not valid: {}",
                record.name,
                check.errors.join("; ")
            ),
        });
    }
    Ok(record)
}

/// Publishes `user`'s template `template_id` as a new draft listing with version 1 (a snapshot
/// of the template). `listing.publisher_id` and `listing.template_id` are set here; an empty
/// category or title is taken from the template.
///
/// # Errors
///
/// [`Error::NotFound`] for a template `user` cannot see; [`Error::Template`] for a built-in,
/// someone else's or an invalid template; `Conflict` for a taken slug; `InvalidInput` for a bad
/// slug.
pub async fn publish_template(
    store: &dyn Store,
    user: &str,
    template_id: &str,
    mut listing: NewListing,
    changelog: &str,
) -> Result<(ListingRecord, ListingVersionRecord)> {
    let record = publishable(store, user, template_id).await?;
    listing.publisher_id = user.to_owned();
    listing.template_id = Some(record.id.clone());
    if listing.category.is_empty() {
        listing.category = record.category.clone();
    }
    if listing.title.trim().is_empty() {
        listing.title = record.name.clone();
    }
    if listing.summary.is_empty() {
        listing.summary = record.description.clone().unwrap_or_default();
    }
    if listing.tags.is_empty() {
        listing.tags = record.tags.clone();
    }
    let created = store.create_listing(listing).await?;
    let version = store
        .add_listing_version(&created.id, snapshot_of(&record), changelog)
        .await?;
    let created = store.get_listing(&created.id).await?.unwrap_or(created);
    Ok((created, version))
}

/// Publishes the current state of a listing's template as its next version. Only the
/// publisher may; a snapshot identical to the latest version's is refused.
///
/// # Errors
///
/// [`Error::NotFound`] for an unknown listing (or one of another publisher) or a deleted
/// template; `Conflict` when nothing changed or the listing is removed.
pub async fn publish_version(
    store: &dyn Store,
    user: &str,
    listing_id: &str,
    changelog: &str,
) -> Result<ListingVersionRecord> {
    let listing = match store.get_listing(listing_id).await? {
        Some(l) if l.publisher_id == user => l,
        _ => {
            return Err(Error::NotFound {
                what: "listing".into(),
                name: listing_id.into(),
            });
        }
    };
    let Some(template_id) = &listing.template_id else {
        return Err(Error::NotFound {
            what: "template of listing".into(),
            name: listing.slug.clone(),
        });
    };
    let record = publishable(store, user, template_id).await?;
    let snapshot = snapshot_of(&record);
    if let Some(latest) = store.list_listing_versions(&listing.id).await?.last()
        && latest.content_hash == content_hash(&snapshot)
    {
        return Err(Error::store(
            StoreErrorKind::Conflict,
            format!(
                "listing `{}` version {} already holds this template; change it before publishing a new version",
                listing.slug, latest.version
            ),
        ));
    }
    store
        .add_listing_version(&listing.id, snapshot, changelog)
        .await
}

/// Installs a listing (by slug or id) for `user`: a private copy of the version (latest by
/// default) in `user`'s templates, with the listing's template as its base.
///
/// # Errors
///
/// [`Error::NotFound`] for an unknown listing or version; `Conflict` for a listing that is not
/// approved or a name `user` already uses.
pub async fn install_listing(
    store: &dyn Store,
    user: &str,
    slug_or_id: &str,
    version: Option<i64>,
    name: Option<String>,
) -> Result<(InstallRecord, TemplateRecord)> {
    let listing = match store.get_listing_by_slug(slug_or_id).await? {
        Some(l) => l,
        None => store
            .get_listing(slug_or_id)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "listing".into(),
                name: slug_or_id.into(),
            })?,
    };
    store
        .install_listing(NewInstall {
            listing_id: listing.id,
            user_id: user.to_owned(),
            version,
            name,
        })
        .await
}
