use super::*;

fn config() -> ModelConfig {
    ModelConfig {
        floor: 4.0,
        max_families: 100,
        ..ModelConfig::default()
    }
}

fn request(ip: &str, ua: &str, tool: Option<&str>) -> (FamilyKeys, FamilyNames) {
    let keys = FamilyKeys::of(ip.parse().unwrap(), Some(ua), "host,user-agent", None);
    let names = FamilyNames {
        address: ip.into(),
        user_agent: ua.into(),
        header_order: "host,user-agent".into(),
        tool: tool.map(str::to_owned),
    };
    (keys, names)
}

fn ip(text: &str) -> std::net::IpAddr {
    text.parse().unwrap()
}

#[test]
fn a_shared_family_needs_give_ups_from_several_prefixes() {
    let mut model = GiveUpModel::new(config());
    let tool_key = family_key(FamilyKind::Tool, "gobuster");
    let mut keys_of = |client: &str| {
        let (keys, names) = request(client, "gobuster/3.5", Some("gobuster"));
        model.register(&keys, &names)
    };
    let first = keys_of("192.0.2.1");
    let second = keys_of("198.51.100.1");
    let third = keys_of("203.0.113.1");
    assert_eq!(first.tool, tool_key);
    for seconds in [10.2, 10.1, 10.4] {
        model.observe(&first, ip("192.0.2.1"), Outcome::GaveUp(seconds));
    }
    let snapshot = model.snapshot(Arc::from(Vec::new()));
    assert_eq!(snapshot.limit(tool_key), None, "one prefix is not enough");
    // The address's own family plans its own next responses.
    assert!((snapshot.limit(first.address).unwrap() - 10.1).abs() < 1e-3);
    model.observe(&second, ip("198.51.100.1"), Outcome::GaveUp(12.0));
    model.observe(&third, ip("203.0.113.1"), Outcome::GaveUp(11.0));
    let snapshot = model.snapshot(Arc::from(Vec::new()));
    // One sample per prefix (the latest, 10.4 for the first), the 10% rank: the lowest.
    let limit = snapshot.limit(tool_key).unwrap();
    assert!((limit - 10.4).abs() < 1e-3, "{limit}");
    let family = model
        .families()
        .find(|f| f.kind == FamilyKind::Tool)
        .unwrap();
    assert_eq!(family.recent().len(), 3);
    assert_eq!(family.give_ups, 5);
}

#[test]
fn thousands_of_closes_from_one_prefix_weigh_as_one() {
    let mut model = GiveUpModel::new(config());
    let mut plan_keys = FamilyKeys::default();
    for i in 0..3000 {
        let client = format!("198.51.100.{}", i % 250);
        let (keys, names) = request(&client, &format!("attacker/{i}"), None);
        let keys = model.register(&keys, &names);
        model.observe(&keys, ip(&client), Outcome::GaveUp(3.2));
        plan_keys = keys;
    }
    let snapshot = model.snapshot(Arc::from(Vec::new()));
    assert_eq!(snapshot.limit(plan_keys.header_order), None);
    let order = model
        .families()
        .find(|f| f.kind == FamilyKind::HeaderOrder)
        .unwrap();
    assert_eq!(order.samples().len(), 1);
}

#[test]
fn quick_exits_and_planned_ends_do_not_move_the_figure() {
    let mut model = GiveUpModel::new(config());
    let (keys, names) = request("192.0.2.1", "x", None);
    let keys = model.register(&keys, &names);
    for _ in 0..3 {
        model.observe(&keys, ip("192.0.2.1"), Outcome::GaveUp(5.0));
    }
    for _ in 0..50 {
        // Took the status line and left.
        model.observe(&keys, ip("192.0.2.1"), Outcome::GaveUp(0.2));
        model.observe(&keys, ip("192.0.2.1"), Outcome::PlannedEnd);
    }
    let address = model
        .families()
        .find(|f| f.kind == FamilyKind::Address)
        .unwrap();
    assert_eq!(address.give_up(&config()), Some(5.0));
    assert_eq!(address.planned_ends, 50);
    assert_eq!(address.give_ups, 3);
}

#[test]
fn a_family_that_never_gives_up_has_no_figure() {
    let mut model = GiveUpModel::new(config());
    let (keys, names) = request("192.0.2.9", "curl/7.88.1", Some("curl"));
    let keys = model.register(&keys, &names);
    for _ in 0..10 {
        model.observe(&keys, ip("192.0.2.9"), Outcome::Completed);
    }
    let snapshot = model.snapshot(Arc::from(Vec::new()));
    for kind in FamilyKind::ALL {
        assert_eq!(snapshot.limit(keys.get(kind)), None);
    }
}

#[test]
fn an_address_that_turns_to_another_tool_starts_over() {
    let mut model = GiveUpModel::new(ModelConfig {
        min_samples: 1,
        ..config()
    });
    let (keys, names) = request("192.0.2.4", "gobuster/3.5", Some("gobuster"));
    let keys = model.register(&keys, &names);
    model.observe(&keys, ip("192.0.2.4"), Outcome::GaveUp(10.0));
    let (other, names) = request("192.0.2.4", "Nikto", Some("nikto"));
    model.register(&other, &names);
    let address = model
        .families()
        .find(|f| f.kind == FamilyKind::Address)
        .unwrap();
    assert_eq!(address.tool.as_deref(), Some("nikto"));
    assert!(address.samples().is_empty());
}

#[test]
fn the_model_is_bounded_and_keeps_evicted_changes_for_storage() {
    let mut model = GiveUpModel::new(ModelConfig {
        max_families: 8,
        ..config()
    });
    for i in 0..20 {
        let client = format!("192.0.2.{i}");
        let (keys, names) = request(&client, "ua", None);
        let keys = model.register(&keys, &names);
        model.observe(&keys, ip(&client), Outcome::GaveUp(9.0));
    }
    assert_eq!(model.families().count(), 8);
    let rows = model.take_changed();
    let addresses = rows
        .iter()
        .filter(|r| r.family.kind == FamilyKind::Address)
        .count();
    assert_eq!(addresses, 20, "every changed address reaches storage");
    assert!(!model.has_changes());
}

#[test]
fn stored_families_come_back_with_their_keys() {
    let mut model = GiveUpModel::new(config());
    for (i, seconds) in [9.5, 10.0, 10.5].into_iter().enumerate() {
        let client = format!("2001:db8:{i}::7");
        let (keys, names) = request(&client, "gobuster/3.5", Some("gobuster"));
        let keys = model.register(&keys, &names);
        model.observe(&keys, ip(&client), Outcome::GaveUp(seconds));
    }
    let rows = model.take_changed();
    let mut restored = GiveUpModel::new(config());
    restored.restore(rows.iter().map(|row| {
        let f = &row.family;
        family_from_row(
            f.kind.name(),
            f.name.clone(),
            f.samples(),
            (f.give_ups, f.planned_ends, f.completed),
            f.tool.clone(),
            f.last_seen,
        )
        .unwrap()
    }));
    let keys = FamilyKeys::of(
        ip("2001:db8:2::7"),
        Some("gobuster/3.5"),
        "host,user-agent",
        Some("gobuster"),
    );
    let snapshot = restored.snapshot(Arc::from(Vec::new()));
    for kind in [
        FamilyKind::UserAgent,
        FamilyKind::HeaderOrder,
        FamilyKind::Tool,
    ] {
        assert_eq!(snapshot.limit(keys.get(kind)), Some(9.5), "{kind:?}");
    }
    // One give-up of its own is not enough for the address.
    assert_eq!(snapshot.limit(keys.address), None);
    assert_eq!(
        snapshot.tool_of(keys.user_agent),
        Some(family_key(FamilyKind::Tool, "gobuster"))
    );
}
