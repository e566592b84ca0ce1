//! Request bodies and query strings, typed so that a malformed value fails with its field
//! named, and checked with `validator` for lengths and URLs.

use serde::{Deserialize, Deserializer};
use utoipa::{IntoParams, ToSchema};
use validator::{Validate, ValidationErrors, ValidationErrorsKind};

use crate::domain::{ConversationType, ExternalUserId, FieldError, Preset, RoleName, TenantId};
use crate::error::Problem;

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
pub(crate) fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

pub(crate) fn url_ok(url: &str) -> Result<(), validator::ValidationError> {
    if url.len() <= 2048
        && (url.starts_with("https://") || url.starts_with("http://"))
        && validator::ValidateUrl::validate_url(&url)
    {
        Ok(())
    } else {
        Err(validator::ValidationError::new("url")
            .with_message("must be an http(s) URL of at most 2048 characters".into()))
    }
}

fn text_ok(s: &str) -> Result<(), validator::ValidationError> {
    if s.trim().is_empty() || s.chars().any(char::is_control) {
        Err(validator::ValidationError::new("text")
            .with_message("must not be blank or contain control characters".into()))
    } else {
        Ok(())
    }
}

/// Runs `validator` and turns its errors into a `validation_failed` problem naming each field
/// by its path (`members[2].role`).
pub fn validate(v: &impl Validate) -> Result<(), Problem> {
    v.validate().map_err(|e| {
        let mut out = Vec::new();
        collect(&e, "", &mut out);
        Problem::validation(out)
    })
}

fn collect(errors: &ValidationErrors, prefix: &str, out: &mut Vec<FieldError>) {
    for (field, kind) in errors.errors() {
        let path = if prefix.is_empty() {
            field.to_string()
        } else {
            format!("{prefix}.{field}")
        };
        match kind {
            ValidationErrorsKind::Field(errs) => {
                for e in errs {
                    let message =
                        e.message
                            .as_ref()
                            .map(|m| m.to_string())
                            .unwrap_or_else(|| match (e.params.get("min"), e.params.get("max")) {
                                (Some(min), Some(max)) => {
                                    format!("length must be between {min} and {max}")
                                }
                                (None, Some(max)) => {
                                    format!("must have at most {max} items or characters")
                                }
                                _ => format!("is invalid ({})", e.code),
                            });
                    out.push(FieldError::new(path.clone(), message));
                }
            }
            ValidationErrorsKind::Struct(inner) => collect(inner, &path, out),
            ValidationErrorsKind::List(items) => {
                for (i, inner) in items {
                    collect(inner, &format!("{path}[{i}]"), out);
                }
            }
        }
    }
}

/// `PUT /v1/users/{user_id}`: the whole profile.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutUserBody {
    /// 1–100 characters, no control characters.
    #[validate(length(min = 1, max = 100), custom(function = "text_ok"))]
    pub display_name: String,
    /// An http(s) URL, or `null`/absent for none.
    #[validate(custom(function = "url_ok"))]
    pub avatar_url: Option<String>,
}

/// One member to add.
#[derive(Debug, Clone, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberInput {
    /// External user id; created on the fly if unknown.
    #[schema(value_type = String, example = "alice")]
    pub user_id: ExternalUserId,
    /// Role to grant (default: the catalog's `default_role`); must rank below the caller's.
    pub role: Option<RoleName>,
}

/// `POST /v1/conversations`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConversationBody {
    /// `group` (default) or `direct`.
    #[serde(rename = "type", default = "default_kind")]
    pub kind: ConversationType,
    /// 1–200 characters; required for groups.
    #[validate(length(min = 1, max = 200), custom(function = "text_ok"))]
    pub name: Option<String>,
    /// At most 2000 characters.
    #[validate(length(max = 2000))]
    pub description: Option<String>,
    /// An http(s) URL.
    #[validate(custom(function = "url_ok"))]
    pub avatar_url: Option<String>,
    /// Server tokens only: the user who becomes owner (user tokens: the caller).
    #[schema(value_type = Option<String>)]
    pub created_by: Option<ExternalUserId>,
    /// `settings.max_members` (2 to the configured default).
    #[validate(range(min = 2))]
    pub max_members: Option<u32>,
    /// `settings.join_policy` of a group (default `invite`; a direct conversation is always
    /// `invite`).
    pub join_policy: Option<crate::domain::JoinPolicy>,
    /// Initial members besides the creator (at most `members.batch_max`).
    #[serde(default)]
    #[validate(nested)]
    pub members: Vec<MemberInput>,
}

fn default_kind() -> ConversationType {
    ConversationType::Group
}

/// `PATCH /v1/conversations/{id}`: absent fields stay; `null` clears description/avatar.
#[derive(Debug, Default, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchConversationBody {
    /// 1–200 characters.
    #[validate(length(min = 1, max = 200), custom(function = "text_ok"))]
    pub name: Option<String>,
    /// At most 2000 characters, or `null` to clear.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// An http(s) URL, or `null` to clear.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub avatar_url: Option<Option<String>>,
    /// `settings.join_policy` of a group: `invite`, `open`, `request` or `closed` (a direct conversation
    /// keeps `invite`: `direct_conversation`).
    pub join_policy: Option<crate::domain::JoinPolicy>,
}

/// `POST /v1/conversations/{id}/members`: either one member (`user_id`, `role`) or a batch
/// (`members`), not both.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMembersBody {
    /// One member: its external id.
    #[schema(value_type = Option<String>)]
    pub user_id: Option<ExternalUserId>,
    /// One member: its role (default: the catalog's `default_role`).
    pub role: Option<RoleName>,
    /// A batch of up to `members.batch_max` members.
    #[validate(nested)]
    pub members: Option<Vec<MemberInput>>,
}

/// `PATCH /v1/conversations/{id}/members/{user_id}`: a new role and/or permission overrides
/// (at least one). Both are applied in one transaction.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchMemberBody {
    /// The new role (never the top role; ownership moves by transfer).
    pub role: Option<RoleName>,
    /// Overrides on top of the role's defaults: flag name → `true`/`false`, or `null` to
    /// return that flag to the role's default. Names are built-in flags or the catalog's
    /// capabilities; a user may turn on only flags it holds.
    #[schema(value_type = Option<Object>, example = json!({"can_send_media": false}))]
    pub permissions: Option<std::collections::BTreeMap<String, Option<bool>>>,
}

/// `DELETE /v1/conversations/{id}/members/{user_id}` query.
#[derive(Debug, Deserialize, Validate, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RemoveQuery {
    /// Why (stored as `departure.removal_reason`), at most 500 characters.
    #[validate(length(max = 500))]
    pub reason: Option<String>,
}

/// `GET /v1/conversations/{id}/members` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListMembersQuery {
    /// Comma-separated statuses (`active,muted` by default; `all` for every status).
    pub status: Option<String>,
    /// Only this role.
    #[param(value_type = Option<String>)]
    pub role: Option<RoleName>,
    /// Page size (default from configuration; at most `pagination.max_limit`, or
    /// `pagination.compact_max_limit` with `view=compact`).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (either view's).
    pub cursor: Option<String>,
    /// `full` (default): every field of each membership; `compact`: one row per member
    /// (user id, display name, avatar URL, role, status), up to 1,000 a page.
    pub view: Option<MemberListView>,
    /// Only members whose display name starts with this (1–100 characters; case, accents and
    /// repeated spaces do not matter), in display-name order; not with `role` or
    /// `view=compact`.
    pub name_prefix: Option<String>,
}

/// The shape of a member list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberListView {
    /// Every field of each membership ([`crate::service::views::MemberView`]).
    Full,
    /// One row per member ([`crate::service::views::CompactMemberPage`]).
    Compact,
}

/// `GET /v1/users/{user_id}/conversations` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MembershipsQuery {
    /// Comma-separated statuses (`active,muted` by default; `all` for every status).
    pub status: Option<String>,
    /// Page size.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `GET /v1/conversations` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListConversationsQuery {
    /// Only this kind (user tokens: `group`, the only kind that can be open).
    #[serde(rename = "type")]
    #[param(rename = "type", value_type = Option<ConversationType>)]
    pub kind: Option<ConversationType>,
    /// Only this join policy (user tokens: `open`, the default, or `request`).
    #[param(value_type = Option<crate::domain::JoinPolicy>)]
    pub join_policy: Option<crate::domain::JoinPolicy>,
    /// Only conversations whose name starts with this (1–100 characters; case, accents and
    /// repeated spaces do not matter).
    pub name_prefix: Option<String>,
    /// Page size.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Plain list query (`limit`, `cursor`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Page size.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `POST /admin/v1/tenants`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantBody {
    /// Slug: 2–63 of a-z, 0-9 and inner hyphens.
    #[schema(value_type = String, example = "acme")]
    pub id: TenantId,
    /// Display name (default: the id), at most 200 characters.
    #[validate(length(min = 1, max = 200), custom(function = "text_ok"))]
    pub name: Option<String>,
    /// The role catalog to start from (default `chat`); editable later with `PUT /v1/roles`.
    pub role_preset: Option<Preset>,
}

/// A tenant's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// Its tokens work.
    Active,
    /// Every token and dashboard session of it is refused (403 `tenant_suspended`); its data
    /// stays.
    Suspended,
}

/// `PATCH /admin/v1/tenants/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTenantBody {
    /// `active` or `suspended`.
    pub status: TenantStatus,
}

/// `POST …/members/{user_id}/ban` and `…/mute`.
#[derive(Debug, Default, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestrictBody {
    /// When the restriction ends (RFC 3339, in the future); absent = until lifted.
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Why, at most 500 characters.
    #[validate(length(max = 500))]
    pub reason: Option<String>,
}

/// `POST /v1/conversations/{id}/transfer-ownership`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    /// The member who becomes owner.
    #[schema(value_type = String)]
    pub user_id: ExternalUserId,
}

/// One authorization question: may `user_id` do `action` in `conversation_id`?
#[derive(Debug, Clone, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeBody {
    /// The conversation (24 hex digits).
    #[schema(value_type = String)]
    pub conversation_id: crate::domain::ConversationId,
    /// The user's external id.
    #[schema(value_type = String)]
    pub user_id: ExternalUserId,
    /// The action.
    pub action: crate::domain::Action,
}

/// `POST /v1/authorize/batch`: up to 100 checks, answered in one round trip.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeBatchBody {
    /// The checks (1 to 100).
    pub checks: Vec<AuthorizeBody>,
}

/// `GET /v1/conversations/{id}/audit` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this action, e.g. `member.banned`.
    pub action: Option<String>,
    /// Only events about this user (external id).
    pub target: Option<String>,
    /// Page size.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `PATCH /v1/conversations/{id}/members/me/settings`: the caller's own settings. Absent
/// fields stay as they are; the change is applied whole or not at all.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    /// `all`, `mentions` or `none`.
    pub notifications: Option<crate::domain::NotificationLevel>,
    /// Mute notifications; given without `muted_until` it means until unmuted (`true`) or
    /// not muted (`false`), and clears any snooze end.
    pub muted: Option<bool>,
    /// A snooze: notifications stay muted until this instant (RFC 3339, future), then resume
    /// by themselves; `null` = muted until unmuted. Setting it implies `muted: true`.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    pub muted_until: Option<Option<chrono::DateTime<chrono::Utc>>>,
    /// Pin the conversation in the caller's list.
    pub pinned: Option<bool>,
}

/// `POST /v1/conversations/{id}/read`: the caller has read up to `message_id`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadBody {
    /// The last message read (24 hex digits, an ObjectId as in seed 004).
    pub message_id: String,
    /// When it was read (RFC 3339; default now; not in the future).
    pub read_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// `POST /v1/conversations/{id}/messages`: the messaging service reports a sent message.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageReportBody {
    /// The sender's external id.
    #[schema(value_type = String)]
    pub user_id: ExternalUserId,
    /// The messaging service's id of the message (1–128 characters); a repeat is counted once.
    pub message_id: String,
    /// When it was sent (RFC 3339).
    pub sent_at: chrono::DateTime<chrono::Utc>,
}

/// One report of `POST /v1/messages/batch`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchMessageReport {
    /// The conversation (24 hex digits).
    #[schema(value_type = String)]
    pub conversation_id: crate::domain::ConversationId,
    /// The sender's external id.
    #[schema(value_type = String)]
    pub user_id: ExternalUserId,
    /// The message id.
    pub message_id: String,
    /// When it was sent (RFC 3339).
    pub sent_at: chrono::DateTime<chrono::Utc>,
}

/// `POST /v1/messages/batch`: up to 500 reports.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageReportBatchBody {
    /// The reports, processed in order.
    pub reports: Vec<BatchMessageReport>,
}
