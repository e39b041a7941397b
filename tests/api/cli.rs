//! The binary as an operator meets it: configuration errors, help, migrations.

use std::process::Command;

fn reliefline() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reliefline"));
    // Only what a test sets reaches the process.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RELIEFLINE_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn a_bad_value_stops_with_one_line_and_exit_code_2() {
    for (var, value, key) in [
        ("RELIEFLINE_HTTP__LISTEN", "localhost-ish", "http.listen"),
        ("RELIEFLINE_DATABASE__URL", "mysql://db/x", "database.url"),
        (
            "RELIEFLINE_HTTP__MAX_CONNECTIONS",
            "many",
            "http.max_connections",
        ),
        ("RELIEFLINE_NO_SUCH__KEY", "1", "no_such"),
    ] {
        let out = reliefline().env(var, value).arg("serve").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(key), "{var}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
    }
}

#[test]
fn a_missing_config_file_is_a_config_error() {
    let out = reliefline()
        .args(["--config", "/nonexistent/reliefline.toml", "serve"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/reliefline.toml"));
}

#[test]
fn help_explains_each_command() {
    let out = reliefline().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for word in ["serve", "migrate", "--config", "RELIEFLINE_"] {
        assert!(text.contains(word), "help mentions {word}: {text}");
    }
}

#[test]
fn migrate_creates_the_database_and_secrets_stay_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nested/folder/r.db");
    let out = reliefline()
        .env(
            "RELIEFLINE_DATABASE__URL",
            format!("sqlite://{}", db.display()),
        )
        .arg("migrate")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(db.exists());

    let out = reliefline()
        .env(
            "RELIEFLINE_DATABASE__URL",
            "postgres://app:s3cret-pw@db.internal/r",
        )
        .env("RELIEFLINE_SECURITY__MASTER_KEY", "ab".repeat(32))
        .arg("check-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(
        !shown.contains("s3cret-pw") && !shown.contains(&"ab".repeat(32)),
        "{shown}"
    );
}
