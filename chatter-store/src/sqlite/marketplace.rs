//! The template marketplace on SQLite (`marketplace_*`, FTS5 search). Every write runs on the
//! single writer connection, so read-check-write sequences inside one transaction cannot
//! interleave.

use async_trait::async_trait;
use chatter_core::store::documents::query_terms;
use chatter_core::store::marketplace::content_hash;
use chatter_core::store::{
    InstallRecord, ListingRecord, ListingSearch, ListingSort, ListingStatus, ListingUpdate,
    ListingVersionRecord, MarketplaceStore, NewInstall, NewListing, NewTemplate, Page,
    RatingRecord, ReviewDecision, ReviewRecord, StoreResult, TemplateRecord,
};
use rusqlite::{Transaction, params};
use serde_json::Value;

use super::templates::insert_template;
use super::{Db, SqliteStore, enum_at, json_at, query_all, query_opt, strings_at};
use crate::common::{conflict, not_found, now_ms, require, strings_json, to_json_text};
use crate::marketplace::{installed_template, refuse_unless, status_list};

const LISTING_COLUMNS: &str = "id, slug, publisher_id, template_id, title, summary, readme, \
    category, tags, license, status, latest_version, rating_avg, rating_count, install_count, \
    created_at, updated_at, approved_at";

fn listing_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ListingRecord> {
    Ok(ListingRecord {
        id: row.get("id")?,
        slug: row.get("slug")?,
        publisher_id: row.get("publisher_id")?,
        template_id: row.get("template_id")?,
        title: row.get("title")?,
        summary: row.get("summary")?,
        readme: row.get("readme")?,
        category: row.get("category")?,
        tags: strings_at(row, "tags")?,
        license: row.get("license")?,
        status: enum_at(row, "status", ListingStatus::parse)?,
        latest_version: row.get("latest_version")?,
        rating_avg: row.get("rating_avg")?,
        rating_count: row.get("rating_count")?,
        install_count: row.get("install_count")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        approved_at: row.get("approved_at")?,
    })
}

fn version_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ListingVersionRecord> {
    Ok(ListingVersionRecord {
        listing_id: row.get("listing_id")?,
        version: row.get("version")?,
        snapshot: json_at(row, "snapshot")?,
        content_hash: row.get("content_hash")?,
        changelog: row.get("changelog")?,
        created_at: row.get("created_at")?,
    })
}

fn review_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ReviewRecord> {
    Ok(ReviewRecord {
        id: row.get("id")?,
        listing_id: row.get("listing_id")?,
        reviewer_id: row.get("reviewer_id")?,
        decision: enum_at(row, "decision", ReviewDecision::parse)?,
        comment: row.get("comment")?,
        version: row.get("version")?,
        created_at: row.get("created_at")?,
    })
}

fn install_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<InstallRecord> {
    Ok(InstallRecord {
        id: row.get("id")?,
        listing_id: row.get("listing_id")?,
        version: row.get("version")?,
        user_id: row.get("user_id")?,
        template_id: row.get("template_id")?,
        created_at: row.get("created_at")?,
    })
}

fn select_listing(conn: &rusqlite::Connection, id: &str) -> StoreResult<Option<ListingRecord>> {
    query_opt(
        conn,
        &format!("SELECT {LISTING_COLUMNS} FROM marketplace_listings WHERE id = ?1"),
        [id],
        listing_row,
    )
}

fn existing_listing(tx: &Transaction<'_>, id: &str) -> StoreResult<ListingRecord> {
    select_listing(tx, id)?.ok_or_else(|| not_found("listing", id))
}

fn set_status(
    tx: &Transaction<'_>,
    id: &str,
    to: ListingStatus,
    now: i64,
) -> StoreResult<ListingRecord> {
    tx.prepare_cached(&format!(
        "UPDATE marketplace_listings SET status = ?2, updated_at = MAX(updated_at, ?3),
             approved_at = CASE WHEN ?2 = 'approved' THEN ?3 ELSE approved_at END
         WHERE id = ?1 RETURNING {LISTING_COLUMNS}"
    ))
    .db()?
    .query_row(params![id, to.as_str(), now], listing_row)
    .db()
}

fn recompute_ratings(tx: &Transaction<'_>, id: &str, now: i64) -> StoreResult<ListingRecord> {
    tx.prepare_cached(&format!(
        "UPDATE marketplace_listings SET
             rating_count = (SELECT COUNT(*) FROM marketplace_ratings WHERE listing_id = ?1),
             rating_avg = COALESCE((SELECT AVG(rating) FROM marketplace_ratings WHERE listing_id = ?1), 0),
             updated_at = MAX(updated_at, ?2)
         WHERE id = ?1 RETURNING {LISTING_COLUMNS}"
    ))
    .db()?
    .query_row(params![id, now], listing_row)
    .db()
}

#[async_trait]
impl MarketplaceStore for SqliteStore {
    async fn create_listing(&self, new: NewListing) -> StoreResult<ListingRecord> {
        let category = crate::marketplace::check_new_listing(&self.limits, &new)?;
        let id = self.ids.or_new(new.id.clone())?;
        let now = now_ms();
        self.write(move |conn| {
            conn.prepare_cached(&format!(
                "INSERT INTO marketplace_listings (id, slug, publisher_id, template_id, title, summary,
                     readme, category, tags, license, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11) RETURNING {LISTING_COLUMNS}"
            ))
            .db()?
            .query_row(
                params![
                    id,
                    new.slug,
                    new.publisher_id,
                    new.template_id,
                    new.title,
                    new.summary,
                    new.readme,
                    category,
                    strings_json(&new.tags),
                    new.license,
                    now
                ],
                listing_row,
            )
            .db()
            .map_err(|e| crate::marketplace::duplicate_slug(e, &new.slug))
        })
        .await
    }

    async fn get_listing(&self, id: &str) -> StoreResult<Option<ListingRecord>> {
        let key = id.to_owned();
        self.read(move |conn| select_listing(conn, &key)).await
    }

    async fn get_listing_by_slug(&self, slug: &str) -> StoreResult<Option<ListingRecord>> {
        let key = slug.to_owned();
        self.read(move |conn| {
            query_opt(
                conn,
                &format!("SELECT {LISTING_COLUMNS} FROM marketplace_listings WHERE slug = ?1"),
                [key],
                listing_row,
            )
        })
        .await
    }

    async fn update_listing(&self, id: &str, update: ListingUpdate) -> StoreResult<ListingRecord> {
        if let Some(title) = &update.title {
            require("title", title)?;
        }
        self.limits.opt_text("readme", update.readme.as_deref())?;
        let key = id.to_owned();
        self.write(move |conn| {
            let tx = conn.transaction().db()?;
            let current = existing_listing(&tx, &key)?;
            if current.status == ListingStatus::Removed {
                return Err(conflict(format!("listing `{key}` is removed")));
            }
            let record = tx
                .prepare_cached(&format!(
                    "UPDATE marketplace_listings SET title = ?2, summary = ?3, readme = ?4,
                         category = ?5, tags = ?6, license = ?7, updated_at = MAX(updated_at, ?8)
                     WHERE id = ?1 RETURNING {LISTING_COLUMNS}"
                ))
                .db()?
                .query_row(
                    params![
                        key,
                        update.title.unwrap_or(current.title),
                        update.summary.unwrap_or(current.summary),
                        update.readme.unwrap_or(current.readme),
                        update.category.unwrap_or(current.category),
                        strings_json(update.tags.as_ref().unwrap_or(&current.tags)),
                        update.license.unwrap_or(current.license),
                        now_ms()
                    ],
                    listing_row,
                )
                .db()?;
            tx.commit().db()?;
            Ok(record)
        })
        .await
    }

    async fn set_listing_status(&self, id: &str, to: ListingStatus) -> StoreResult<ListingRecord> {
        let key = id.to_owned();
        self.write(move |conn| {
            let tx = conn.transaction().db()?;
            let current = existing_listing(&tx, &key)?;
            crate::marketplace::check_transition(&current, to)?;
            let record = set_status(&tx, &key, to, now_ms())?;
            tx.commit().db()?;
            Ok(record)
        })
        .await
    }

    async fn add_listing_version(
        &self,
        listing_id: &str,
        snapshot: Value,
        changelog: &str,
    ) -> StoreResult<ListingVersionRecord> {
        crate::marketplace::check_version(&self.limits, &snapshot, changelog)?;
        let key = listing_id.to_owned();
        let changelog = changelog.to_owned();
        let hash = content_hash(&snapshot);
        self.write(move |conn| {
            let tx = conn.transaction().db()?;
            let current = existing_listing(&tx, &key)?;
            if current.status == ListingStatus::Removed {
                return Err(conflict(format!("listing `{key}` is removed")));
            }
            let version = current.latest_version + 1;
            let now = now_ms();
            let record = tx
                .prepare_cached(
                    "INSERT INTO marketplace_versions (listing_id, version, snapshot, content_hash,
                         changelog, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     RETURNING listing_id, version, snapshot, content_hash, changelog, created_at",
                )
                .db()?
                .query_row(
                    params![key, version, to_json_text(&snapshot), hash, changelog, now],
                    version_row,
                )
                .db()?;
            tx.execute(
                "UPDATE marketplace_listings SET latest_version = ?2, updated_at = MAX(updated_at, ?3)
                 WHERE id = ?1",
                params![key, version, now],
            )
            .db()?;
            tx.commit().db()?;
            Ok(record)
        })
        .await
    }

    async fn list_listing_versions(
        &self,
        listing_id: &str,
    ) -> StoreResult<Vec<ListingVersionRecord>> {
        let key = listing_id.to_owned();
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT listing_id, version, snapshot, content_hash, changelog, created_at
                 FROM marketplace_versions WHERE listing_id = ?1 ORDER BY version",
                [key],
                version_row,
            )
        })
        .await
    }

    async fn review_listing(
        &self,
        listing_id: &str,
        reviewer_id: &str,
        decision: ReviewDecision,
        comment: &str,
    ) -> StoreResult<(ReviewRecord, ListingRecord)> {
        require("reviewer_id", reviewer_id)?;
        self.limits.text("comment", comment)?;
        let key = listing_id.to_owned();
        let reviewer = reviewer_id.to_owned();
        let comment = comment.to_owned();
        let id = self.ids.next();
        self.write(move |conn| {
            let tx = conn.transaction().db()?;
            let current = existing_listing(&tx, &key)?;
            refuse_unless(&current, &[ListingStatus::Submitted], "reviewed")?;
            let now = now_ms();
            let review = tx
                .prepare_cached(
                    "INSERT INTO marketplace_reviews (id, listing_id, reviewer_id, decision, comment,
                         version, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     RETURNING id, listing_id, reviewer_id, decision, comment, version, created_at",
                )
                .db()?
                .query_row(
                    params![
                        id,
                        key,
                        reviewer,
                        decision.as_str(),
                        comment,
                        current.latest_version,
                        now
                    ],
                    review_row,
                )
                .db()?;
            let to = match decision {
                ReviewDecision::Approved => ListingStatus::Approved,
                ReviewDecision::Rejected => ListingStatus::Rejected,
            };
            let listing = set_status(&tx, &key, to, now)?;
            tx.commit().db()?;
            Ok((review, listing))
        })
        .await
    }

    async fn list_reviews(&self, listing_id: &str) -> StoreResult<Vec<ReviewRecord>> {
        let key = listing_id.to_owned();
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT id, listing_id, reviewer_id, decision, comment, version, created_at
                 FROM marketplace_reviews WHERE listing_id = ?1 ORDER BY created_at, id",
                [key],
                review_row,
            )
        })
        .await
    }

    async fn rate_listing(
        &self,
        listing_id: &str,
        user_id: &str,
        rating: i32,
        comment: &str,
    ) -> StoreResult<ListingRecord> {
        crate::marketplace::check_rating(user_id, rating)?;
        self.limits.text("comment", comment)?;
        let key = listing_id.to_owned();
        let user = user_id.to_owned();
        let comment = comment.to_owned();
        self.write(move |conn| {
            let tx = conn.transaction().db()?;
            let current = existing_listing(&tx, &key)?;
            crate::marketplace::check_can_rate(&current, &user)?;
            let now = now_ms();
            tx.prepare_cached(
                "INSERT INTO marketplace_ratings (listing_id, user_id, rating, comment, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .db()?
            .execute(params![key, user, rating, comment, now])
            .db()
            .map_err(|e| crate::marketplace::duplicate_rating(e, &key, &user))?;
            let listing = recompute_ratings(&tx, &key, now)?;
            tx.commit().db()?;
            Ok(listing)
        })
        .await
    }

    async fn delete_rating(&self, listing_id: &str, user_id: &str) -> StoreResult<bool> {
        let key = listing_id.to_owned();
        let user = user_id.to_owned();
        self.write(move |conn| {
            let tx = conn.transaction().db()?;
            let n = tx
                .execute(
                    "DELETE FROM marketplace_ratings WHERE listing_id = ?1 AND user_id = ?2",
                    params![key, user],
                )
                .db()?;
            if n > 0 {
                recompute_ratings(&tx, &key, now_ms())?;
            }
            tx.commit().db()?;
            Ok(n > 0)
        })
        .await
    }

    async fn list_ratings(&self, listing_id: &str, page: Page) -> StoreResult<Vec<RatingRecord>> {
        let key = listing_id.to_owned();
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT listing_id, user_id, rating, comment, created_at FROM marketplace_ratings
                 WHERE listing_id = ?1 ORDER BY created_at DESC, user_id LIMIT ?2 OFFSET ?3",
                params![key, page.sql_limit(), page.sql_offset()],
                |row| {
                    Ok(RatingRecord {
                        listing_id: row.get(0)?,
                        user_id: row.get(1)?,
                        rating: row.get(2)?,
                        comment: row.get(3)?,
                        created_at: row.get(4)?,
                    })
                },
            )
        })
        .await
    }

    async fn install_listing(
        &self,
        install: NewInstall,
    ) -> StoreResult<(InstallRecord, TemplateRecord)> {
        require("user_id", &install.user_id)?;
        let install_id = self.ids.next();
        let template_id = self.ids.next();
        self.write(move |conn| {
            let tx = conn.transaction().db()?;
            let listing = existing_listing(&tx, &install.listing_id)?;
            refuse_unless(&listing, &[ListingStatus::Approved], "installed")?;
            let version = install.version.unwrap_or(listing.latest_version);
            let Some(found) = query_opt(
                &tx,
                "SELECT listing_id, version, snapshot, content_hash, changelog, created_at
                 FROM marketplace_versions WHERE listing_id = ?1 AND version = ?2",
                params![listing.id, version],
                version_row,
            )?
            else {
                return Err(not_found(
                    "listing version",
                    &format!("{}@{version}", listing.id),
                ));
            };
            let new: NewTemplate =
                installed_template(&listing, &found, &install.user_id, install.name.clone())?;
            let now = now_ms();
            let template = insert_template(&tx, &template_id, new, now)?;
            let record = tx
                .prepare_cached(
                    "INSERT INTO marketplace_installs (id, listing_id, version, user_id, template_id,
                         created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     RETURNING id, listing_id, version, user_id, template_id, created_at",
                )
                .db()?
                .query_row(
                    params![install_id, listing.id, version, install.user_id, template.id, now],
                    install_row,
                )
                .db()?;
            tx.execute(
                "UPDATE marketplace_listings SET install_count = install_count + 1 WHERE id = ?1",
                [&listing.id],
            )
            .db()?;
            tx.commit().db()?;
            Ok((record, template))
        })
        .await
    }

    async fn list_installs(&self, listing_id: &str, page: Page) -> StoreResult<Vec<InstallRecord>> {
        let key = listing_id.to_owned();
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT id, listing_id, version, user_id, template_id, created_at
                 FROM marketplace_installs WHERE listing_id = ?1
                 ORDER BY created_at DESC, id DESC LIMIT ?2 OFFSET ?3",
                params![key, page.sql_limit(), page.sql_offset()],
                install_row,
            )
        })
        .await
    }

    async fn search_listings(
        &self,
        search: &ListingSearch,
        page: Page,
    ) -> StoreResult<Vec<ListingRecord>> {
        let terms = query_terms(search.query.as_deref().unwrap_or(""));
        // Each term is an FTS5 string (no query syntax from the user); all must match.
        let fts_query = (!terms.is_empty()).then(|| {
            terms
                .iter()
                .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
                .collect::<Vec<_>>()
                .join(" AND ")
        });
        let order = match (search.sort, fts_query.is_some()) {
            (ListingSort::Relevance, true) => "f.relevance DESC, l.created_at DESC",
            (ListingSort::Rating, _) => "l.rating_avg DESC, l.rating_count DESC, l.created_at DESC",
            (ListingSort::Installs, _) => "l.install_count DESC, l.created_at DESC",
            _ => "l.created_at DESC",
        };
        let source = if fts_query.is_some() {
            "marketplace_listings l JOIN (SELECT listing_id, -bm25(marketplace_listings_fts) AS relevance
                 FROM marketplace_listings_fts WHERE marketplace_listings_fts MATCH ?1) f
                 ON f.listing_id = l.id"
        } else {
            "marketplace_listings l"
        };
        let sql = format!(
            "SELECT {} FROM {source}
             WHERE l.status IN (SELECT value FROM json_each(?2))
               AND (?3 IS NULL OR l.category = ?3)
               AND (?4 IS NULL OR EXISTS (SELECT 1 FROM json_each(l.tags) WHERE value = ?4))
               AND (?5 IS NULL OR l.publisher_id = ?5)
             ORDER BY {order}, l.id DESC LIMIT ?6 OFFSET ?7",
            LISTING_COLUMNS
                .split(", ")
                .map(|c| format!("l.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let statuses = Value::from(status_list(&search.statuses)).to_string();
        let search = search.clone();
        self.read(move |conn| {
            query_all(
                conn,
                &sql,
                params![
                    fts_query,
                    statuses,
                    search.category,
                    search.tag,
                    search.publisher_id,
                    page.sql_limit(),
                    page.sql_offset()
                ],
                listing_row,
            )
        })
        .await
    }
}
