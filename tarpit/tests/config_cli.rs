//! The configuration as the operator meets it: `check-config`, errors naming file and key.

use std::process::Command;

fn tarpit(args: &[&str], dir: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tarpit"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tarpit.toml"),
        "[tarpit]\nresponse_delay = 2.5\n",
    )
    .unwrap();
    let (code, stdout, _) = tarpit(
        &["--config", "tarpit.toml", "check-config", "--port", "9090"],
        dir.path(),
    );
    assert_eq!(code, 0);
    let printed: toml::Table = toml::from_str(&stdout).unwrap();
    assert_eq!(printed["tarpit"]["response_delay"].as_float(), Some(2.5));
    assert_eq!(printed["server"]["port"].as_integer(), Some(9090));
    assert_eq!(printed["tarpit"]["response_chunk"].as_str(), Some("."));
    assert_eq!(
        printed["storage"]["database"].as_str(),
        Some("data/tarpit_events.db")
    );
    // The state of what the configuration points at is shown too.
    assert!(
        stdout.contains("# geoip.city_db data/GeoLite2-City.mmdb: not found"),
        "{stdout}"
    );
}

#[test]
fn check_config_accepts_every_port_keys_and_names_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tarpit.toml"),
        "[server]\nports = \"1-21,23-65535\"\nprefixes = [\"192.0.2.0/24\", \"2001:db8::1\"]\n\
         exclude_ports = \"9100\"\n",
    )
    .unwrap();
    let (code, stdout, stderr) = tarpit(&["--config", "tarpit.toml", "check-config"], dir.path());
    assert_eq!(code, 0, "{stderr}");
    let printed: toml::Table = toml::from_str(&stdout).unwrap();
    assert_eq!(printed["server"]["ports"].as_str(), Some("1-21,23-65535"));
    assert!(
        stdout.contains(
            "# ports: 1-21,23-65535 except 9100 on 192.0.2.0/24, 2001:db8::1/128 (sk_lookup, required)"
        ),
        "{stdout}"
    );
    std::fs::write(
        dir.path().join("bad.toml"),
        "[server]\nports = \"1-21,x\"\n",
    )
    .unwrap();
    let (code, _, stderr) = tarpit(&["--config", "bad.toml", "check-config"], dir.path());
    assert_eq!(code, 2);
    assert!(
        stderr.contains("bad.toml: key `server.ports`") && stderr.contains("\"x\" is not a port"),
        "{stderr}"
    );
}

#[test]
fn unknown_key_names_file_and_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), "[server]\nprot = 80\n").unwrap();
    let (code, _, stderr) = tarpit(&["--config", "bad.toml", "check-config"], dir.path());
    assert_eq!(code, 2);
    assert!(
        stderr.contains("bad.toml: key `server.prot`: unknown field"),
        "{stderr}"
    );
}

#[test]
fn bad_value_fails_run_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[tarpit]\nresponse_delay = -2\n",
    )
    .unwrap();
    let (code, _, stderr) = tarpit(&["--config", "bad.toml"], dir.path());
    assert_eq!(code, 2);
    assert!(
        stderr.contains("bad.toml: key `tarpit.response_delay`"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "nothing is created for a bad config"
    );
}

#[test]
fn the_example_config_is_valid_and_documents_every_default() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../tarpit.example.toml");
    let text = std::fs::read_to_string(example).unwrap();
    let parsed = tarpit::config::Config::parse(&text, example).unwrap();
    parsed.validate(example).unwrap();
    assert_eq!(parsed, tarpit::config::Config::default());
    // Every key of the effective configuration appears in the example.
    let defaults: toml::Table =
        toml::from_str(&tarpit::config::Config::default().to_toml()).unwrap();
    for (section, keys) in &defaults {
        for (key, value) in keys.as_table().unwrap() {
            // A nested table (`[ship.clickhouse]`) is documented under its own header; an inline
            // one (`labels = {}`) as a key.
            let inline = text.contains(&format!("\n{key} ="));
            let nested = value.as_table().filter(|_| !inline).map_or_else(
                || vec![(section.clone(), key.clone())],
                |table| {
                    assert!(
                        text.contains(&format!("\n[{section}.{key}]")),
                        "[{section}.{key}]"
                    );
                    table
                        .keys()
                        .map(|inner| (format!("{section}.{key}"), inner.clone()))
                        .collect()
                },
            );
            for (section, key) in nested {
                assert!(
                    text.contains(&format!("\n{key} =")),
                    "tarpit.example.toml does not document [{section}] {key}"
                );
            }
        }
    }
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    let dir = tempfile::tempdir().unwrap();
    let (code, bash, _) = tarpit(&["completions", "bash"], dir.path());
    assert_eq!(code, 0);
    assert!(bash.contains("_tarpit()"), "{bash}");
    assert!(bash.contains("check-config") && bash.contains("--response-delay"));
    let (code, zsh, _) = tarpit(&["completions", "zsh"], dir.path());
    assert_eq!(code, 0);
    assert!(zsh.starts_with("#compdef tarpit"), "{zsh}");
    let (code, man, _) = tarpit(&["man"], dir.path());
    assert_eq!(code, 0);
    assert!(
        man.starts_with(".ie") || man.contains(".TH tarpit"),
        "{man}"
    );
    assert!(
        man.contains(r"check\-config") || man.contains("check-config"),
        "{man}"
    );
    assert!(man.contains(r"response\-delay") || man.contains("response-delay"));
}
