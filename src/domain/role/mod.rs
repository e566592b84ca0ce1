//! Roles, permission flags and a tenant's role catalog (DESIGN §3).
//!
//! A tenant's [`RoleCatalog`] orders its roles by rank (highest first) and gives each its default
//! flags and an optional holder limit. The top role is the conversation's ownership role: exactly
//! one holder, moved only by transfer or hand-off. Presets cover the seeds: `chat` (seed 004),
//! `community` (seed 000) and `classroom` (seed 001). A member's stored `permissions` are its
//! role's defaults with its own overrides applied, resolved at write time so a permission check
//! is one indexed read.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::FieldError;
use super::ids::InvalidId;

/// The name of a role in a tenant's catalog: 1–32 characters of `a-z`, `0-9`, `_` or `-`,
/// starting with a letter (e.g. `owner`, `co-admin`, `group_admin`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, example = "moderator")]
pub struct RoleName(String);

fn is_name(s: &str, extra: &[u8]) -> bool {
    let b = s.as_bytes();
    (1..=32).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(c))
}

impl RoleName {
    /// Parses a role name. Errors: the rule it breaks.
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        if is_name(s, b"_-") {
            Ok(RoleName(s.to_owned()))
        } else {
            Err(InvalidId(
                "a role name is 1-32 characters of a-z, 0-9, _ or -, starting with a letter",
            ))
        }
    }

    /// The stored and wire name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for RoleName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RoleName::parse(&s).map_err(|e| serde::de::Error::custom(e.0))
    }
}

impl FromStr for RoleName {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        RoleName::parse(s)
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A built-in permission flag: seed 004's eight plus `can_change_roles` and
/// `can_delete_conversation` (seed 003's `role_assign` and `group_delete`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flag {
    /// `can_send_messages`.
    SendMessages,
    /// `can_send_media`.
    SendMedia,
    /// `can_add_members`.
    AddMembers,
    /// `can_remove_members` (also bans and mutes).
    RemoveMembers,
    /// `can_change_info`.
    ChangeInfo,
    /// `can_pin_messages`.
    PinMessages,
    /// `can_delete_messages`.
    DeleteMessages,
    /// `can_start_calls`.
    StartCalls,
    /// `can_change_roles`: change other members' roles and permission overrides, read the audit.
    ChangeRoles,
    /// `can_delete_conversation`.
    DeleteConversation,
}

impl Flag {
    /// Every built-in flag, in document order.
    pub const ALL: [Flag; 10] = [
        Flag::SendMessages,
        Flag::SendMedia,
        Flag::AddMembers,
        Flag::RemoveMembers,
        Flag::ChangeInfo,
        Flag::PinMessages,
        Flag::DeleteMessages,
        Flag::StartCalls,
        Flag::ChangeRoles,
        Flag::DeleteConversation,
    ];

    /// The field name in `permissions`, e.g. `can_send_messages`.
    pub const fn name(self) -> &'static str {
        match self {
            Flag::SendMessages => "can_send_messages",
            Flag::SendMedia => "can_send_media",
            Flag::AddMembers => "can_add_members",
            Flag::RemoveMembers => "can_remove_members",
            Flag::ChangeInfo => "can_change_info",
            Flag::PinMessages => "can_pin_messages",
            Flag::DeleteMessages => "can_delete_messages",
            Flag::StartCalls => "can_start_calls",
            Flag::ChangeRoles => "can_change_roles",
            Flag::DeleteConversation => "can_delete_conversation",
        }
    }

    /// The flag named `name`, if built in.
    pub fn named(name: &str) -> Option<Flag> {
        Flag::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// A member's resolved permission flags: seed 004's `permissions` sub-document (field names
/// exact), plus the extension flags `can_change_roles` and `can_delete_conversation` and the
/// tenant's custom capabilities (e.g. seed 003's `secret_edit`) as further boolean fields.
/// Omitted flags read as `false`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Permissions {
    /// May post messages.
    #[serde(default)]
    pub can_send_messages: bool,
    /// May post media (images, audio, video, files).
    #[serde(default)]
    pub can_send_media: bool,
    /// May add members (of a role below its own).
    #[serde(default)]
    pub can_add_members: bool,
    /// May remove, ban and mute members (of a rank below its own).
    #[serde(default)]
    pub can_remove_members: bool,
    /// May change the conversation's name, description and avatar.
    #[serde(default)]
    pub can_change_info: bool,
    /// May pin messages.
    #[serde(default)]
    pub can_pin_messages: bool,
    /// May delete other members' messages.
    #[serde(default)]
    pub can_delete_messages: bool,
    /// May start voice or video calls.
    #[serde(default)]
    pub can_start_calls: bool,
    /// May change the roles and permission overrides of members ranked below it, and read the
    /// audit trail (extension; seed 003 `role_assign`).
    #[serde(default)]
    pub can_change_roles: bool,
    /// May delete the conversation (extension; seed 003 `group_delete`).
    #[serde(default)]
    pub can_delete_conversation: bool,
    /// The tenant's custom capabilities, by name (e.g. `secret_edit`).
    #[serde(flatten)]
    pub custom: BTreeMap<String, bool>,
}

impl Permissions {
    /// Every built-in flag on; custom capabilities are added by the catalog.
    pub fn all() -> Permissions {
        let mut p = Permissions::default();
        for f in Flag::ALL {
            p.set(f.name(), true);
        }
        p
    }

    /// The flags named, on; the rest off.
    pub fn only(names: &[&str]) -> Permissions {
        let mut p = Permissions::default();
        for n in names {
            p.set(n, true);
        }
        p
    }

    fn slot(&mut self, flag: Flag) -> &mut bool {
        match flag {
            Flag::SendMessages => &mut self.can_send_messages,
            Flag::SendMedia => &mut self.can_send_media,
            Flag::AddMembers => &mut self.can_add_members,
            Flag::RemoveMembers => &mut self.can_remove_members,
            Flag::ChangeInfo => &mut self.can_change_info,
            Flag::PinMessages => &mut self.can_pin_messages,
            Flag::DeleteMessages => &mut self.can_delete_messages,
            Flag::StartCalls => &mut self.can_start_calls,
            Flag::ChangeRoles => &mut self.can_change_roles,
            Flag::DeleteConversation => &mut self.can_delete_conversation,
        }
    }

    /// Whether the built-in flag is set.
    pub const fn has(&self, flag: Flag) -> bool {
        match flag {
            Flag::SendMessages => self.can_send_messages,
            Flag::SendMedia => self.can_send_media,
            Flag::AddMembers => self.can_add_members,
            Flag::RemoveMembers => self.can_remove_members,
            Flag::ChangeInfo => self.can_change_info,
            Flag::PinMessages => self.can_pin_messages,
            Flag::DeleteMessages => self.can_delete_messages,
            Flag::StartCalls => self.can_start_calls,
            Flag::ChangeRoles => self.can_change_roles,
            Flag::DeleteConversation => self.can_delete_conversation,
        }
    }

    /// Whether the flag or custom capability `name` is set (unknown names are `false`).
    pub fn get(&self, name: &str) -> bool {
        match Flag::named(name) {
            Some(f) => self.has(f),
            None => self.custom.get(name).copied().unwrap_or(false),
        }
    }

    /// Sets the flag or custom capability `name`.
    pub fn set(&mut self, name: &str, value: bool) {
        match Flag::named(name) {
            Some(f) => *self.slot(f) = value,
            None => {
                self.custom.insert(name.to_owned(), value);
            }
        }
    }

    /// Every flag that is set, built-in first, then custom capabilities by name.
    pub fn granted<'a>(&'a self) -> impl Iterator<Item = &'a str> + 'a {
        Flag::ALL
            .into_iter()
            .filter(|f| self.has(*f))
            .map(|f| -> &'a str { f.name() })
            .chain(
                self.custom
                    .iter()
                    .filter(|(_, v)| **v)
                    .map(|(k, _)| k.as_str()),
            )
    }
}

/// One role of a catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleDef {
    /// The role's name.
    pub name: RoleName,
    /// How many present members of one conversation may hold it (`None` = unlimited). The top
    /// role's limit is always 1.
    #[serde(default)]
    pub limit: Option<u32>,
    /// The role's default flags.
    pub permissions: Permissions,
}

/// A preset catalog (DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// Seed 004: owner, admin, moderator, member, guest.
    Chat,
    /// Seed 000: admin, co-admin, member, guest ("only admins can modify roles").
    Community,
    /// Seed 001: group_admin, teacher, student; its system_admin is the tenant's server token.
    Classroom,
}

/// A tenant's roles, highest rank first, the role new members get, and its custom
/// capabilities. Stored in the tenant document (`roles`); a tenant without one uses the `chat`
/// preset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleCatalog {
    /// Roles, highest rank first; the first is the ownership role (one holder).
    pub roles: Vec<RoleDef>,
    /// The role given when an add names none; never the top role.
    pub default_role: RoleName,
    /// Tenant-defined capability names (same syntax as flags, e.g. `secret_edit`), usable as
    /// flags in `permissions` and as `/v1/authorize` actions.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// Most roles a catalog may have.
pub const MAX_ROLES: usize = 16;
/// Most custom capabilities a catalog may have.
pub const MAX_CAPABILITIES: usize = 32;

fn role(name: &str, limit: Option<u32>, permissions: Permissions) -> RoleDef {
    RoleDef {
        name: RoleName(name.to_owned()),
        limit,
        permissions,
    }
}

impl FromStr for Preset {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        match s {
            "chat" => Ok(Preset::Chat),
            "community" => Ok(Preset::Community),
            "classroom" => Ok(Preset::Classroom),
            _ => Err(InvalidId("a preset is chat, community or classroom")),
        }
    }
}

impl RoleCatalog {
    /// The catalog of a preset.
    pub fn preset(p: Preset) -> RoleCatalog {
        let all = Permissions::all();
        let send = ["can_send_messages", "can_send_media", "can_start_calls"];
        let (roles, default_role) = match p {
            Preset::Chat => (
                vec![
                    role("owner", Some(1), all.clone()),
                    role(
                        "admin",
                        None,
                        Permissions {
                            can_delete_conversation: false,
                            ..all.clone()
                        },
                    ),
                    role(
                        "moderator",
                        None,
                        Permissions {
                            can_change_info: false,
                            can_change_roles: false,
                            can_delete_conversation: false,
                            ..all.clone()
                        },
                    ),
                    role("member", None, Permissions::only(&send)),
                    role("guest", None, Permissions::only(&["can_send_messages"])),
                ],
                "member",
            ),
            Preset::Community => (
                vec![
                    role("admin", Some(1), all.clone()),
                    role(
                        "co-admin",
                        None,
                        Permissions {
                            can_change_roles: false,
                            can_delete_conversation: false,
                            ..all.clone()
                        },
                    ),
                    role("member", None, Permissions::only(&send)),
                    role("guest", None, Permissions::only(&["can_send_messages"])),
                ],
                "member",
            ),
            Preset::Classroom => (
                vec![
                    role("group_admin", Some(1), all.clone()),
                    role(
                        "teacher",
                        None,
                        Permissions {
                            can_change_info: false,
                            can_change_roles: false,
                            can_delete_conversation: false,
                            ..all.clone()
                        },
                    ),
                    role(
                        "student",
                        None,
                        Permissions::only(&["can_send_messages", "can_send_media"]),
                    ),
                ],
                "student",
            ),
        };
        RoleCatalog {
            roles,
            default_role: RoleName(default_role.to_owned()),
            capabilities: Vec::new(),
        }
    }

    /// Checks the catalog's shape; every problem is named by its field path.
    /// Rules: 2–16 roles with distinct names; the top role's limit is 1 (or omitted) and other
    /// limits are at least 1; `default_role` is a role other than the top one; capabilities
    /// are distinct names of 1–32 `a-z0-9_` characters that are not built-in flags (at most
    /// 32); every role's permissions name only built-in flags and these capabilities.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        if !(2..=MAX_ROLES).contains(&self.roles.len()) {
            errs.push(FieldError::new(
                "roles",
                format!("between 2 and {MAX_ROLES} roles"),
            ));
        }
        if self.capabilities.len() > MAX_CAPABILITIES {
            errs.push(FieldError::new(
                "capabilities",
                format!("at most {MAX_CAPABILITIES}"),
            ));
        }
        for (i, c) in self.capabilities.iter().enumerate() {
            if !is_name(c, b"_") || Flag::named(c).is_some() {
                errs.push(FieldError::new(
                    format!("capabilities[{i}]"),
                    "1-32 characters of a-z, 0-9 or _, starting with a letter, not a built-in flag",
                ));
            } else if self.capabilities[..i].contains(c) {
                errs.push(FieldError::new(
                    format!("capabilities[{i}]"),
                    "listed twice",
                ));
            }
        }
        for (i, r) in self.roles.iter().enumerate() {
            if self.roles[..i].iter().any(|o| o.name == r.name) {
                errs.push(FieldError::new(format!("roles[{i}].name"), "listed twice"));
            }
            match (i, r.limit) {
                (0, Some(l)) if l != 1 => errs.push(FieldError::new(
                    "roles[0].limit",
                    "the top role is held by exactly one member",
                )),
                (_, Some(0)) => errs.push(FieldError::new(
                    format!("roles[{i}].limit"),
                    "at least 1 (omit it for no limit)",
                )),
                _ => {}
            }
            for name in r.permissions.custom.keys() {
                if !self.capabilities.contains(name) {
                    errs.push(FieldError::new(
                        format!("roles[{i}].permissions.{name}"),
                        "not a built-in flag or one of `capabilities`",
                    ));
                }
            }
        }
        match self.roles.iter().position(|r| r.name == self.default_role) {
            None => errs.push(FieldError::new("default_role", "not one of `roles`")),
            Some(0) => errs.push(FieldError::new(
                "default_role",
                "the top role is never given by default",
            )),
            Some(_) => {}
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// The top (ownership) role.
    pub fn top(&self) -> &RoleName {
        &self.roles[0].name
    }

    /// Whether `role` is the top role.
    pub fn is_top(&self, role: &RoleName) -> bool {
        self.roles.first().is_some_and(|r| &r.name == role)
    }

    /// The role a previous owner takes after a transfer: the second in rank.
    pub fn runner_up(&self) -> &RoleName {
        &self.roles[1.min(self.roles.len() - 1)].name
    }

    /// The role's definition, if in the catalog.
    pub fn get(&self, role: &RoleName) -> Option<&RoleDef> {
        self.roles.iter().find(|r| &r.name == role)
    }

    /// The role's rank: the top role has `len - 1`, the lowest 0; a role missing from the
    /// catalog ranks below every other (-1), so it can act on nobody.
    pub fn rank(&self, role: &RoleName) -> i32 {
        self.roles
            .iter()
            .position(|r| &r.name == role)
            .map_or(-1, |i| (self.roles.len() - 1 - i) as i32)
    }

    /// Whether `name` is a built-in flag or one of the catalog's capabilities.
    pub fn is_flag(&self, name: &str) -> bool {
        Flag::named(name).is_some() || self.capabilities.iter().any(|c| c == name)
    }

    /// The flags of `role` with `overrides` applied; every capability of the catalog appears
    /// (off unless granted). A role missing from the catalog resolves to no flags.
    pub fn resolve(&self, role: &RoleName, overrides: &BTreeMap<String, bool>) -> Permissions {
        let mut p = self
            .get(role)
            .map(|r| r.permissions.clone())
            .unwrap_or_default();
        p.custom.retain(|k, _| self.capabilities.contains(k));
        for c in &self.capabilities {
            p.custom.entry(c.clone()).or_insert(false);
        }
        for (k, v) in overrides {
            if self.is_flag(k) {
                p.set(k, *v);
            }
        }
        p
    }
}

impl Default for RoleCatalog {
    fn default() -> Self {
        RoleCatalog::preset(Preset::Chat)
    }
}

#[cfg(test)]
mod tests;
