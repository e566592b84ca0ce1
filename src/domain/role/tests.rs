//! Tests of role catalogs: presets, validation, resolution.
use super::*;

fn name(s: &str) -> RoleName {
    RoleName::parse(s).unwrap()
}

#[test]
fn every_preset_is_valid_and_ranks_strictly_highest_first() {
    for p in [Preset::Chat, Preset::Community, Preset::Classroom] {
        let c = RoleCatalog::preset(p);
        assert_eq!(c.validate(), Ok(()), "{p:?}");
        for pair in c.roles.windows(2) {
            assert!(c.rank(&pair[0].name) > c.rank(&pair[1].name));
        }
        assert_eq!(c.roles[0].limit, Some(1));
    }
}

#[test]
fn in_every_preset_a_lower_role_never_has_a_flag_a_higher_role_lacks() {
    for p in [Preset::Chat, Preset::Community, Preset::Classroom] {
        let c = RoleCatalog::preset(p);
        for pair in c.roles.windows(2) {
            for flag in pair[1].permissions.granted() {
                assert!(
                    pair[0].permissions.get(flag),
                    "{p:?}: {} has {flag}, {} lacks it",
                    pair[1].name,
                    pair[0].name
                );
            }
        }
    }
}

#[test]
fn the_chat_preset_matches_seed_004() {
    let c = RoleCatalog::preset(Preset::Chat);
    let names: Vec<&str> = c.roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["owner", "admin", "moderator", "member", "guest"]);
    let member = c.resolve(&name("member"), &BTreeMap::new());
    assert!(member.can_send_messages && member.can_send_media && member.can_start_calls);
    assert!(!member.can_add_members && !member.can_change_roles);
    assert!(
        !c.resolve(&name("admin"), &BTreeMap::new())
            .can_delete_conversation
    );
    assert!(
        c.resolve(&name("owner"), &BTreeMap::new())
            .can_delete_conversation
    );
}

#[test]
fn role_names_parse_and_reject() {
    for ok in ["owner", "co-admin", "group_admin", "r2"] {
        assert_eq!(name(ok).as_str(), ok);
    }
    for bad in ["", "Owner", "2nd", "a b", "x".repeat(33).as_str(), "../x"] {
        assert!(RoleName::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn overrides_apply_on_top_of_defaults_and_unknown_names_are_ignored() {
    let mut c = RoleCatalog::preset(Preset::Chat);
    c.capabilities = vec!["secret_edit".into()];
    let mut o = BTreeMap::new();
    o.insert("can_send_media".to_owned(), false);
    o.insert("secret_edit".to_owned(), true);
    o.insert("not_a_flag".to_owned(), true);
    let p = c.resolve(&name("member"), &o);
    assert!(!p.can_send_media && p.can_send_messages);
    assert!(p.get("secret_edit"));
    assert!(!p.custom.contains_key("not_a_flag"));
    assert!(
        !c.resolve(&name("guest"), &BTreeMap::new())
            .get("secret_edit")
    );
    assert_eq!(c.resolve(&name("nobody"), &BTreeMap::new()), {
        let mut none = Permissions::default();
        none.set("secret_edit", false);
        none
    });
}

#[test]
fn a_catalog_breaking_a_rule_names_every_field() {
    let mut c = RoleCatalog::preset(Preset::Community);
    c.roles[0].limit = Some(2);
    c.roles[2].limit = Some(0);
    c.roles[3].name = name("member");
    c.roles[1].permissions.set("secret_edit", true);
    c.default_role = name("admin");
    c.capabilities = vec!["can_send_messages".into(), "ok".into(), "ok".into()];
    let fields: Vec<String> = c
        .validate()
        .unwrap_err()
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(
        fields,
        [
            "capabilities[0]",
            "capabilities[2]",
            "roles[0].limit",
            "roles[1].permissions.secret_edit",
            "roles[2].limit",
            "roles[3].name",
            "default_role"
        ]
    );
}
