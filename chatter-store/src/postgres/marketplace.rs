//! The template marketplace on Postgres (`marketplace_*`, `tsvector` search). Every
//! read-check-write sequence locks the listing row first (`FOR UPDATE`), so concurrent ratings,
//! installs, reviews and versions of one listing are serialised and each recomputation sees the
//! rows committed before it.

use async_trait::async_trait;
use chatter_core::store::documents::query_terms;
use chatter_core::store::marketplace::content_hash;
use chatter_core::store::{
    InstallRecord, ListingRecord, ListingSearch, ListingSort, ListingStatus, ListingUpdate,
    ListingVersionRecord, MarketplaceStore, NewInstall, NewListing, Page, RatingRecord,
    ReviewDecision, ReviewRecord, StoreResult, TemplateRecord,
};
use serde_json::Value;
use tokio_postgres::{Row, Transaction};

use super::templates::insert_template;
use super::{Pg, PostgresStore, col, enum_col, strings_col};
use crate::common::{conflict, not_found, now_ms, require};
use crate::marketplace::{installed_template, refuse_unless, status_list};

const LISTING_COLUMNS: &str = "id, slug, publisher_id, template_id, title, summary, readme, \
    category, tags, license, status, latest_version, rating_avg, rating_count, install_count, \
    created_at, updated_at, approved_at";

fn listing_row(row: &Row) -> StoreResult<ListingRecord> {
    Ok(ListingRecord {
        id: col(row, "id")?,
        slug: col(row, "slug")?,
        publisher_id: col(row, "publisher_id")?,
        template_id: col(row, "template_id")?,
        title: col(row, "title")?,
        summary: col(row, "summary")?,
        readme: col(row, "readme")?,
        category: col(row, "category")?,
        tags: strings_col(row, "tags")?,
        license: col(row, "license")?,
        status: enum_col(row, "status", ListingStatus::parse)?,
        latest_version: col(row, "latest_version")?,
        rating_avg: col(row, "rating_avg")?,
        rating_count: col(row, "rating_count")?,
        install_count: col(row, "install_count")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
        approved_at: col(row, "approved_at")?,
    })
}

fn version_row(row: &Row) -> StoreResult<ListingVersionRecord> {
    Ok(ListingVersionRecord {
        listing_id: col(row, "listing_id")?,
        version: col(row, "version")?,
        snapshot: col(row, "snapshot")?,
        content_hash: col(row, "content_hash")?,
        changelog: col(row, "changelog")?,
        created_at: col(row, "created_at")?,
    })
}

fn review_row(row: &Row) -> StoreResult<ReviewRecord> {
    Ok(ReviewRecord {
        id: col(row, "id")?,
        listing_id: col(row, "listing_id")?,
        reviewer_id: col(row, "reviewer_id")?,
        decision: enum_col(row, "decision", ReviewDecision::parse)?,
        comment: col(row, "comment")?,
        version: col(row, "version")?,
        created_at: col(row, "created_at")?,
    })
}

fn install_row(row: &Row) -> StoreResult<InstallRecord> {
    Ok(InstallRecord {
        id: col(row, "id")?,
        listing_id: col(row, "listing_id")?,
        version: col(row, "version")?,
        user_id: col(row, "user_id")?,
        template_id: col(row, "template_id")?,
        created_at: col(row, "created_at")?,
    })
}

/// The listing, locked for the rest of the transaction.
async fn lock_listing(tx: &Transaction<'_>, id: &str) -> StoreResult<ListingRecord> {
    let row = tx
        .query_opt(
            &format!("SELECT {LISTING_COLUMNS} FROM marketplace_listings WHERE id = $1 FOR UPDATE"),
            &[&id],
        )
        .await
        .pg()?;
    match row {
        Some(row) => listing_row(&row),
        None => Err(not_found("listing", id)),
    }
}

async fn set_status(
    tx: &Transaction<'_>,
    id: &str,
    to: ListingStatus,
    now: i64,
) -> StoreResult<ListingRecord> {
    let row = tx
        .query_one(
            &format!(
                "UPDATE marketplace_listings SET status = $2, updated_at = GREATEST(updated_at, $3),
                     approved_at = CASE WHEN $2 = 'approved' THEN $3 ELSE approved_at END
                 WHERE id = $1 RETURNING {LISTING_COLUMNS}"
            ),
            &[&id, &to.as_str(), &now],
        )
        .await
        .pg()?;
    listing_row(&row)
}

async fn recompute_ratings(tx: &Transaction<'_>, id: &str, now: i64) -> StoreResult<ListingRecord> {
    let row = tx
        .query_one(
            &format!(
                "UPDATE marketplace_listings SET
                     rating_count = (SELECT COUNT(*) FROM marketplace_ratings WHERE listing_id = $1),
                     rating_avg = COALESCE((SELECT AVG(rating)::float8 FROM marketplace_ratings
                                            WHERE listing_id = $1), 0),
                     updated_at = GREATEST(updated_at, $2)
                 WHERE id = $1 RETURNING {LISTING_COLUMNS}"
            ),
            &[&id, &now],
        )
        .await
        .pg()?;
    listing_row(&row)
}

#[async_trait]
impl MarketplaceStore for PostgresStore {
    async fn create_listing(&self, new: NewListing) -> StoreResult<ListingRecord> {
        let category = crate::marketplace::check_new_listing(&self.limits, &new)?;
        let id = self.ids.or_new(new.id.clone())?;
        let tags = Value::from(new.tags.clone());
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO marketplace_listings (id, slug, publisher_id, template_id, title, summary,
                         readme, category, tags, license, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) RETURNING {LISTING_COLUMNS}"
                ),
                &[
                    &id,
                    &new.slug,
                    &new.publisher_id,
                    &new.template_id,
                    &new.title,
                    &new.summary,
                    &new.readme,
                    &category,
                    &tags,
                    &new.license,
                    &now_ms(),
                ],
            )
            .await
            .pg()
            .map_err(|e| crate::marketplace::duplicate_slug(e, &new.slug))?;
        listing_row(&row)
    }

    async fn get_listing(&self, id: &str) -> StoreResult<Option<ListingRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {LISTING_COLUMNS} FROM marketplace_listings WHERE id = $1"),
                &[&id],
            )
            .await
            .pg()?;
        row.as_ref().map(listing_row).transpose()
    }

    async fn get_listing_by_slug(&self, slug: &str) -> StoreResult<Option<ListingRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {LISTING_COLUMNS} FROM marketplace_listings WHERE slug = $1"),
                &[&slug],
            )
            .await
            .pg()?;
        row.as_ref().map(listing_row).transpose()
    }

    async fn update_listing(&self, id: &str, update: ListingUpdate) -> StoreResult<ListingRecord> {
        if let Some(title) = &update.title {
            require("title", title)?;
        }
        self.limits.opt_text("readme", update.readme.as_deref())?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.pg()?;
        let current = lock_listing(&tx, id).await?;
        if current.status == ListingStatus::Removed {
            return Err(conflict(format!("listing `{id}` is removed")));
        }
        let tags = Value::from(update.tags.unwrap_or(current.tags));
        let row = tx
            .query_one(
                &format!(
                    "UPDATE marketplace_listings SET title = $2, summary = $3, readme = $4, category = $5,
                         tags = $6, license = $7, updated_at = GREATEST(updated_at, $8)
                     WHERE id = $1 RETURNING {LISTING_COLUMNS}"
                ),
                &[
                    &id,
                    &update.title.unwrap_or(current.title),
                    &update.summary.unwrap_or(current.summary),
                    &update.readme.unwrap_or(current.readme),
                    &update.category.unwrap_or(current.category),
                    &tags,
                    &update.license.unwrap_or(current.license),
                    &now_ms(),
                ],
            )
            .await
            .pg()?;
        let record = listing_row(&row)?;
        tx.commit().await.pg()?;
        Ok(record)
    }

    async fn set_listing_status(&self, id: &str, to: ListingStatus) -> StoreResult<ListingRecord> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.pg()?;
        let current = lock_listing(&tx, id).await?;
        crate::marketplace::check_transition(&current, to)?;
        let record = set_status(&tx, id, to, now_ms()).await?;
        tx.commit().await.pg()?;
        Ok(record)
    }

    async fn add_listing_version(
        &self,
        listing_id: &str,
        snapshot: Value,
        changelog: &str,
    ) -> StoreResult<ListingVersionRecord> {
        crate::marketplace::check_version(&self.limits, &snapshot, changelog)?;
        let hash = content_hash(&snapshot);
        let mut client = self.client().await?;
        let tx = client.transaction().await.pg()?;
        let current = lock_listing(&tx, listing_id).await?;
        if current.status == ListingStatus::Removed {
            return Err(conflict(format!("listing `{listing_id}` is removed")));
        }
        let version = current.latest_version + 1;
        let now = now_ms();
        let row = tx
            .query_one(
                "INSERT INTO marketplace_versions (listing_id, version, snapshot, content_hash, changelog,
                     created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
                &[&listing_id, &version, &snapshot, &hash, &changelog, &now],
            )
            .await
            .pg()?;
        tx.execute(
            "UPDATE marketplace_listings SET latest_version = $2, updated_at = GREATEST(updated_at, $3)
             WHERE id = $1",
            &[&listing_id, &version, &now],
        )
        .await
        .pg()?;
        let record = version_row(&row)?;
        tx.commit().await.pg()?;
        Ok(record)
    }

    async fn list_listing_versions(
        &self,
        listing_id: &str,
    ) -> StoreResult<Vec<ListingVersionRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM marketplace_versions WHERE listing_id = $1 ORDER BY version",
                &[&listing_id],
            )
            .await
            .pg()?;
        rows.iter().map(version_row).collect()
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
        let id = self.ids.next();
        let mut client = self.client().await?;
        let tx = client.transaction().await.pg()?;
        let current = lock_listing(&tx, listing_id).await?;
        refuse_unless(&current, &[ListingStatus::Submitted], "reviewed")?;
        let now = now_ms();
        let row = tx
            .query_one(
                "INSERT INTO marketplace_reviews (id, listing_id, reviewer_id, decision, comment, version,
                     created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
                &[
                    &id,
                    &listing_id,
                    &reviewer_id,
                    &decision.as_str(),
                    &comment,
                    &current.latest_version,
                    &now,
                ],
            )
            .await
            .pg()?;
        let review = review_row(&row)?;
        let to = match decision {
            ReviewDecision::Approved => ListingStatus::Approved,
            ReviewDecision::Rejected => ListingStatus::Rejected,
        };
        let listing = set_status(&tx, listing_id, to, now).await?;
        tx.commit().await.pg()?;
        Ok((review, listing))
    }

    async fn list_reviews(&self, listing_id: &str) -> StoreResult<Vec<ReviewRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM marketplace_reviews WHERE listing_id = $1 ORDER BY created_at, id",
                &[&listing_id],
            )
            .await
            .pg()?;
        rows.iter().map(review_row).collect()
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
        let mut client = self.client().await?;
        let tx = client.transaction().await.pg()?;
        let current = lock_listing(&tx, listing_id).await?;
        crate::marketplace::check_can_rate(&current, user_id)?;
        let now = now_ms();
        tx.execute(
            "INSERT INTO marketplace_ratings (listing_id, user_id, rating, comment, created_at)
             VALUES ($1, $2, $3, $4, $5)",
            &[&listing_id, &user_id, &rating, &comment, &now],
        )
        .await
        .pg()
        .map_err(|e| crate::marketplace::duplicate_rating(e, listing_id, user_id))?;
        let listing = recompute_ratings(&tx, listing_id, now).await?;
        tx.commit().await.pg()?;
        Ok(listing)
    }

    async fn delete_rating(&self, listing_id: &str, user_id: &str) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.pg()?;
        if tx
            .query_opt(
                "SELECT id FROM marketplace_listings WHERE id = $1 FOR UPDATE",
                &[&listing_id],
            )
            .await
            .pg()?
            .is_none()
        {
            return Ok(false);
        }
        let n = tx
            .execute(
                "DELETE FROM marketplace_ratings WHERE listing_id = $1 AND user_id = $2",
                &[&listing_id, &user_id],
            )
            .await
            .pg()?;
        if n > 0 {
            recompute_ratings(&tx, listing_id, now_ms()).await?;
        }
        tx.commit().await.pg()?;
        Ok(n > 0)
    }

    async fn list_ratings(&self, listing_id: &str, page: Page) -> StoreResult<Vec<RatingRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM marketplace_ratings WHERE listing_id = $1
                 ORDER BY created_at DESC, user_id LIMIT $2 OFFSET $3",
                &[&listing_id, &page.sql_limit(), &page.sql_offset()],
            )
            .await
            .pg()?;
        rows.iter()
            .map(|row| {
                Ok(RatingRecord {
                    listing_id: col(row, "listing_id")?,
                    user_id: col(row, "user_id")?,
                    rating: col(row, "rating")?,
                    comment: col(row, "comment")?,
                    created_at: col(row, "created_at")?,
                })
            })
            .collect()
    }

    async fn install_listing(
        &self,
        install: NewInstall,
    ) -> StoreResult<(InstallRecord, TemplateRecord)> {
        require("user_id", &install.user_id)?;
        let install_id = self.ids.next();
        let template_id = self.ids.next();
        let mut client = self.client().await?;
        let tx = client.transaction().await.pg()?;
        let listing = lock_listing(&tx, &install.listing_id).await?;
        refuse_unless(&listing, &[ListingStatus::Approved], "installed")?;
        let version = install.version.unwrap_or(listing.latest_version);
        let Some(row) = tx
            .query_opt(
                "SELECT * FROM marketplace_versions WHERE listing_id = $1 AND version = $2",
                &[&listing.id, &version],
            )
            .await
            .pg()?
        else {
            return Err(not_found(
                "listing version",
                &format!("{}@{version}", listing.id),
            ));
        };
        let found = version_row(&row)?;
        let new = installed_template(&listing, &found, &install.user_id, install.name.clone())?;
        let now = now_ms();
        let template = insert_template(&tx, &template_id, new, now).await?;
        let row = tx
            .query_one(
                "INSERT INTO marketplace_installs (id, listing_id, version, user_id, template_id, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
                &[
                    &install_id,
                    &listing.id,
                    &version,
                    &install.user_id,
                    &template.id,
                    &now,
                ],
            )
            .await
            .pg()?;
        tx.execute(
            "UPDATE marketplace_listings SET install_count = install_count + 1 WHERE id = $1",
            &[&listing.id],
        )
        .await
        .pg()?;
        let record = install_row(&row)?;
        tx.commit().await.pg()?;
        Ok((record, template))
    }

    async fn list_installs(&self, listing_id: &str, page: Page) -> StoreResult<Vec<InstallRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM marketplace_installs WHERE listing_id = $1
                 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
                &[&listing_id, &page.sql_limit(), &page.sql_offset()],
            )
            .await
            .pg()?;
        rows.iter().map(install_row).collect()
    }

    async fn search_listings(
        &self,
        search: &ListingSearch,
        page: Page,
    ) -> StoreResult<Vec<ListingRecord>> {
        let terms = query_terms(search.query.as_deref().unwrap_or(""));
        // Terms are alphanumeric only (`query_terms`); each is quoted and AND-ed, so no tsquery
        // syntax from the user is interpreted.
        let tsquery = (!terms.is_empty()).then(|| {
            terms
                .iter()
                .map(|t| format!("'{t}'"))
                .collect::<Vec<_>>()
                .join(" & ")
        });
        let order = match (search.sort, tsquery.is_some()) {
            (ListingSort::Relevance, true) => {
                "ts_rank(l.search_tsv, to_tsquery('english', $1)) DESC, l.created_at DESC"
            }
            (ListingSort::Rating, _) => "l.rating_avg DESC, l.rating_count DESC, l.created_at DESC",
            (ListingSort::Installs, _) => "l.install_count DESC, l.created_at DESC",
            _ => "l.created_at DESC",
        };
        let columns = LISTING_COLUMNS
            .split(", ")
            .map(|c| format!("l.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {columns} FROM marketplace_listings l
             WHERE ($1::text IS NULL OR l.search_tsv @@ to_tsquery('english', $1))
               AND l.status = ANY($2)
               AND ($3::text IS NULL OR l.category = $3)
               AND ($4::text IS NULL OR l.tags @> jsonb_build_array($4::text))
               AND ($5::text IS NULL OR l.publisher_id = $5)
             ORDER BY {order}, l.id DESC LIMIT $6 OFFSET $7"
        );
        let statuses = status_list(&search.statuses);
        let client = self.client().await?;
        let rows = client
            .query(
                &sql,
                &[
                    &tsquery,
                    &statuses,
                    &search.category,
                    &search.tag,
                    &search.publisher_id,
                    &page.sql_limit(),
                    &page.sql_offset(),
                ],
            )
            .await
            .pg()?;
        rows.iter().map(listing_row).collect()
    }
}
