//! The `flagstone` binary, run for real on fixture configs: output, JSON and
//! exit codes.

use std::process::{Command, Output};

use flagstone::{Context, FlagStore};

const EXAMPLE: &str = "tests/it/testdata/example.json";
const NEXT: &str = "tests/it/testdata/next.json";
const BAD: &str = "tests/it/testdata/bad.json";

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flagstone"))
        .args(args)
        .env_remove("NO_COLOR")
        .output()
        .expect("the binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8")
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("utf-8")
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

fn assert_clean(out: &Output) {
    let all = stdout(out) + &stderr(out);
    assert!(!all.contains("panicked"), "{all}");
    assert!(!all.contains('\x1b'), "no color when stdout is not a terminal: {all:?}");
}

#[test]
fn validate_summarises_good_files() {
    let out = run(&["validate", EXAMPLE, NEXT]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("version 7, 2 flags, 6 cohorts; stages in effect: new-checkout@canary (3/5)"),
        "{text}"
    );
    assert!(
        text.contains(
            "version 8, 2 flags, 6 cohorts; stages in effect: new-checkout@eu-half (4/5)"
        ),
        "{text}"
    );
    assert_clean(&out);
}

#[test]
fn validate_prints_every_problem_with_its_path_and_exits_1() {
    let out = run(&["validate", BAD, EXAMPLE]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    for expected in [
        "invalid tests/it/testdata/bad.json: 4 problem(s)",
        "flags.x.stages[0].percent: 140 is not within 0..=100",
        r#"flags.x.stages[1].name: duplicate stage name "a" (also stages[0])"#,
        r#"flags.x.stages[1].cohorts[0]: unknown cohort "ghost""#,
        r#"flags.x.stage: "b" names no stage (stages: a, a)"#,
        "ok tests/it/testdata/example.json",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
    }
    let report = json(&run(&["validate", "--json", BAD]));
    assert_eq!(report[0]["valid"], false);
    assert_eq!(report[0]["problems"].as_array().map(Vec::len), Some(4));
    assert_eq!(report[0]["problems"][0]["path"], "flags.x.stages[0].percent");
    assert_clean(&out);
}

#[test]
fn explain_walks_every_step() {
    let out = run(&[
        "explain",
        EXAMPLE,
        "--flag",
        "new-checkout",
        "--tenant",
        "t-104",
        "--region",
        "eu-west",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for expected in [
        "decision     ON",
        r#"exposed by stage "beta" (#1)"#,
        r#"bucket_by    tenant = "t-104" -> bucket 45176 of 100000"#,
        "regulated        not in the cohort",
        "internal  staff (out), staff-users (out)",
        "MATCHED",
        "after the current stage",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
    }
    assert_clean(&out);
}

#[test]
fn explain_json_shows_schedules_by_time() {
    // A tenant in the EU half but outside the 10% canary of next.json.
    let tenant = (0..10_000)
        .map(|i| format!("tenant-{i}"))
        .find(|t| (10_000..50_000).contains(&flagstone::bucket("new-checkout", t)))
        .expect("a tenant");
    let at = |time: &str| {
        json(&run(&[
            "explain",
            NEXT,
            "--flag",
            "new-checkout",
            "--tenant",
            &tenant,
            "--region",
            "eu-north",
            "--at",
            time,
            "--json",
        ]))
    };
    let before = at("2026-12-01T01:59:59Z");
    assert_eq!(before["enabled"], false);
    assert_eq!(before["stages"][3]["verdict"], "not-started");
    assert_eq!(before["stages"][2]["verdict"], "outside-percent");
    let after = at("2026-12-01T02:00:00Z");
    assert_eq!(after["enabled"], true);
    assert_eq!(after["reason"], "eu-half");
    assert_eq!(after["stages"][3]["verdict"], "matched");
    assert_eq!(after["stages"][4]["verdict"], "not-in-effect");
}

#[test]
fn diff_lists_changes_estimates_and_exits_2() {
    let out = run(&["diff", EXAMPLE, NEXT]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stdout(&out);
    for expected in [
        "changes (version 7 -> 8)",
        "stage canary: percent 5% -> 10%",
        "stage advanced canary -> eu-half",
        "estimated from percentages and cohort sizes",
        "~5.0% + 50% of eu (regions eu-west/eu-north)",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
    }
    let same = run(&["diff", EXAMPLE, EXAMPLE]);
    assert_eq!(same.status.code(), Some(0));
    assert!(stdout(&same).contains("no changes in behaviour"));
    assert_clean(&out);
}

/// Issue 18, item 1: `diff` agrees with the services: a NEW whose version
/// is not above OLD's (with other content) is refused by every service, so
/// `diff` says so and exits 1.
#[test]
fn diff_says_loudly_when_services_will_refuse_the_push() {
    let dir = tempfile::tempdir().expect("dir");
    let next = std::fs::read_to_string(NEXT).expect("next");
    let version = |v: u64| {
        let mut doc: serde_json::Value = serde_json::from_str(&next).expect("json");
        doc["version"] = v.into();
        let path = dir.path().join(format!("next-{v}.json"));
        std::fs::write(&path, doc.to_string()).expect("write");
        path.display().to_string()
    };
    for (v, what) in [(7, "the same version"), (6, "an older version")] {
        let out = run(&["diff", EXAMPLE, &version(v)]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(err.contains("every service will refuse this push"), "{what}: {err}");
        let out = run(&["diff", EXAMPLE, &version(v), "--json"]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(json(&out)["refused_by_services"], true);
    }
    let ok = run(&["diff", EXAMPLE, &version(8)]);
    assert_eq!(ok.status.code(), Some(2), "a bump: changes, exit 2");
}

#[test]
fn diff_counts_a_population_exactly_as_the_library_does() {
    let at = "2026-12-02T00:00:00Z";
    for population in ["tests/it/testdata/population.csv", "tests/it/testdata/population.jsonl"] {
        let out = run(&["diff", EXAMPLE, NEXT, "--population", population, "--at", at, "--json"]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let report = json(&out);
        let flips = &report["blast_radius"]["new-checkout"];

        // The same count, through the library.
        let clock = || flagstone::ManualClock::from_rfc3339(at).expect("time");
        let old = FlagStore::from_json(std::fs::read(EXAMPLE).expect("fixture"))
            .expect("valid")
            .with_clock(clock());
        let new = FlagStore::from_json(std::fs::read(NEXT).expect("fixture"))
            .expect("valid")
            .with_clock(clock());
        let text = std::fs::read_to_string(population).expect("fixture");
        let mut off_to_on = 0;
        for line in text.lines().skip(usize::from(population.ends_with(".csv"))) {
            let (tenant, region) = if population.ends_with(".csv") {
                let mut cells = line.split(',');
                (cells.next().expect("tenant").to_owned(), cells.next().expect("region").to_owned())
            } else {
                let v: serde_json::Value = serde_json::from_str(line).expect("json line");
                (
                    v["tenant"].as_str().expect("tenant").to_owned(),
                    v["region"].as_str().expect("region").to_owned(),
                )
            };
            let ctx = Context::new().tenant(&tenant).region(&region);
            if !old.is_enabled("new-checkout", &ctx) && new.is_enabled("new-checkout", &ctx) {
                off_to_on += 1;
            }
        }
        assert!(off_to_on > 50, "the fixture exercises the change");
        assert_eq!(flips["off_to_on"]["units"], off_to_on, "{population}");
        assert_eq!(flips["on_to_off"]["units"], 0, "{population}");
        let region = |r: &str| flips["by_region"][r]["off_to_on"].as_u64();
        assert!(region("us-east") < region("eu-west"), "{flips}");
    }
}

#[test]
fn diff_warns_loudly_about_a_salt_change_and_a_removed_flag() {
    let dir = std::env::temp_dir().join(format!("flagstone-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let salted = dir.join("salted.json");
    let text = std::fs::read_to_string(EXAMPLE).expect("fixture");
    let changed = text
        .replace(r#""salt": "new-checkout""#, r#""salt": "new-checkout-v2""#)
        .replace(r#""dark-mode":    { "enabled": true },"#, "")
        .replacen(r#""version": 7"#, r#""version": 8"#, 1);
    std::fs::write(&salted, changed).expect("write");
    let out = run(&["diff", EXAMPLE, salted.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(2));
    let text = stdout(&out);
    assert!(text.contains(r#"salt "new-checkout" -> "new-checkout-v2""#), "{text}");
    assert!(text.contains("flag removed"), "{text}");
    assert!(text.contains("WARNING") && text.contains("bucketed anew"), "{text}");
    assert!(text.contains("NO"), "marked not reversible: {text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn plan_shows_the_stages_in_order_with_the_current_one() {
    let out = run(&["plan", EXAMPLE, "--flag", "new-checkout"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let canary = text.lines().find(|l| l.contains(" canary ")).expect("a canary row");
    assert!(canary.contains("CURRENT") && canary.contains("+5% of tenants"), "{canary}");
    assert!(text.contains("excluding regulated"), "{text}");
    assert!(
        text.lines().any(|l| l.contains("everyone") && l.contains("+95% of tenants")),
        "{text}"
    );
    let plan = json(&run(&["plan", EXAMPLE, "--json"]));
    assert_eq!(plan["new-checkout"]["stages"][2]["state"], "CURRENT");
    assert_eq!(run(&["plan", EXAMPLE, "--flag", "nope"]).status.code(), Some(1));
}

#[test]
fn bucket_prints_what_the_library_computes() {
    let out = run(&["bucket", "--salt", "new-checkout", "t-104", "t-221"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("t-104  {}", flagstone::bucket("new-checkout", "t-104"))),
        "{text}"
    );
    let rows = json(&run(&["bucket", "--json", "--salt", "s", "a", "b"]));
    assert_eq!(rows[1]["bucket"], flagstone::bucket("s", "b"));
}

#[test]
fn errors_are_one_clear_line_and_exit_1() {
    let missing = run(&["explain", "tests/it/testdata/missing.json", "--flag", "x"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).starts_with("error: cannot read tests/it/testdata/missing.json"),
        "{}",
        stderr(&missing)
    );
    let bad = run(&["explain", BAD, "--flag", "x"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("flags.x.stages[0].percent: 140 is not within 0..=100"),
        "{}",
        stderr(&bad)
    );
    let usage = run(&["explain", EXAMPLE, "--flag", "x", "--attr", "no-equals"]);
    assert_eq!(usage.status.code(), Some(1), "a usage error is not diff's 2");
    let time = run(&["explain", EXAMPLE, "--flag", "x", "--at", "tomorrow"]);
    assert_eq!(time.status.code(), Some(1));
    for out in [missing, bad, usage, time] {
        assert_clean(&out);
    }
}

/// A temporary directory for the files of one test.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("flagstone-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[test]
fn diff_counts_cohort_member_changes_in_the_blast_radius() {
    let dir = scratch("cohorts");
    let config = |version: u64, beta: &str| {
        format!(
            r#"{{ "version": {version}, "cohorts": {{ "beta": {{ "tenants": [{beta}] }} }},
                "flags": {{ "f": {{ "enabled": true, "bucket_by": "tenant",
                    "stages": [ {{ "name": "beta", "cohorts": ["beta"] }} ], "stage": "beta" }} }} }}"#
        )
    };
    let (old, new, population) =
        (dir.join("old.json"), dir.join("new.json"), dir.join("population.csv"));
    std::fs::write(&old, config(1, r#""p-0""#)).expect("write");
    let added: Vec<String> = (0..7).map(|i| format!("\"p-{i}\"")).collect();
    std::fs::write(&new, config(2, &added.join(","))).expect("write");
    let rows: Vec<String> = (0..20).map(|i| format!("p-{i},eu-west")).collect();
    std::fs::write(&population, format!("tenant,region\n{}\n", rows.join("\n"))).expect("write");
    let (old, new, population) = (
        old.to_str().expect("utf-8"),
        new.to_str().expect("utf-8"),
        population.to_str().expect("utf-8"),
    );

    let out = run(&["diff", old, new, "--population", population, "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["blast_radius"]["f"]["off_to_on"]["units"], 6, "{report}");
    assert_eq!(report["blast_radius"]["f"]["by_cohort"]["beta"]["off_to_on"], 6, "{report}");

    // Without a population, the flag that uses the cohort is listed.
    let out = run(&["diff", old, new, "--json"]);
    let report = json(&out);
    assert!(report["blast_radius"]["f"].is_object(), "{report}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn the_cli_never_panics_on_odd_file_names_closed_pipes_or_full_disks() {
    use std::os::unix::ffi::OsStrExt as _;
    let dir = scratch("odd");
    let odd = dir.join(std::ffi::OsStr::from_bytes(b"flags-\xff.json"));
    std::fs::write(&odd, "{ \"version\": 1 }").expect("write");
    for args in [vec!["validate"], vec!["validate", "--json"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_flagstone"))
            .args(&args)
            .arg(&odd)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert_clean(&out);
    }

    // A reader that stops after one line: the rest of the output is
    // dropped, and the command still ends as it would have.
    let units: Vec<String> = (0..20_000).map(|i| format!("u-{i}")).collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flagstone"))
        .args(["bucket", "--salt", "s"])
        .args(&units)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let mut first = [0u8; 16];
    use std::io::Read as _;
    let _ = child.stdout.take().expect("piped").read(&mut first);
    let out = child.wait_with_output().expect("ends");
    assert_eq!(out.status.code(), Some(0), "closed pipe: {}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));

    // A full disk: one line on stderr, exit 1.
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    let out = Command::new(env!("CARGO_BIN_EXE_flagstone"))
        .args(["bucket", "--salt", "s", "u-1"])
        .stdout(full)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot write the output"), "{err}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn output_never_carries_raw_control_characters() {
    let dir = scratch("control");
    let file = dir.join("flags.json");
    std::fs::write(
        &file,
        r#"{ "version": 1,
            "cohorts": { "eu": { "regions": ["eu-\u001b[2J", "x\u202ey"] } },
            "flags": { "f": { "enabled": true, "stages": [ { "name": "eu", "cohorts": ["eu"] } ], "stage": "eu" } } }"#,
    )
    .expect("write");
    let file = file.to_str().expect("utf-8");
    for args in [vec!["plan", file], vec!["plan", file, "--json"], vec!["validate", file]] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(!text.contains('\x1b') && !text.contains('\u{202e}'), "{args:?}: {text:?}");
    }
    let out = run(&["plan", file]);
    assert!(stdout(&out).contains("eu-\\u{1b}[2J"), "{}", stdout(&out));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn explain_of_an_unknown_flag_exits_1_and_suggests_the_nearest() {
    let out = run(&["explain", EXAMPLE, "--flag", "new-chekout"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("did you mean \"new-checkout\"?"), "{}", stderr(&out));
}

#[test]
fn keygen_sign_and_verify_round_trip_and_match_openssl() {
    let dir = scratch("keys");
    let base = dir.join("release");
    let out = run(&["keygen", "--out", base.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let again = run(&["keygen", "--out", base.to_str().expect("utf-8")]);
    assert_eq!(again.status.code(), Some(1), "never overwrites a key");
    let (key, public) = (dir.join("release.key"), dir.join("release.pub"));
    let file = dir.join("flags.json");
    std::fs::write(&file, "{ \"version\": 1 }").expect("write");
    let (file, key, public) = (
        file.to_str().expect("utf-8"),
        key.to_str().expect("utf-8"),
        public.to_str().expect("utf-8"),
    );
    assert_eq!(run(&["sign", file, "--key", key]).status.code(), Some(0));
    let valid = run(&["verify", file, "--public-key", public]);
    assert_eq!(valid.status.code(), Some(0), "{}", stdout(&valid));
    std::fs::write(file, "{ \"version\": 2 }").expect("tamper");
    let invalid = run(&["verify", file, "--public-key", public, "--json"]);
    assert_eq!(invalid.status.code(), Some(1));
    assert_eq!(json(&invalid)["valid"], false);

    // OpenSSL reads the same private key and makes a signature `verify`
    // accepts; its public key is the one in release.pub.
    if let Ok(openssl) = Command::new("openssl").arg("version").output()
        && openssl.status.success()
    {
        let sig = dir.join("openssl.sig");
        let signed = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl pkeyutl -sign -rawin -inkey {key} -in {file} | base64 -w0 > {}",
                sig.display()
            ))
            .status()
            .expect("openssl");
        assert!(signed.success());
        let out = run(&[
            "verify",
            file,
            "--public-key",
            public,
            "--signature",
            sig.to_str().expect("utf-8"),
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
        let pem = Command::new("openssl")
            .args(["pkey", "-in", key, "-pubout"])
            .output()
            .expect("openssl");
        let pem_file = dir.join("release.pem");
        std::fs::write(&pem_file, &pem.stdout).expect("write");
        let out = run(&[
            "verify",
            file,
            "--public-key",
            pem_file.to_str().expect("utf-8"),
            "--signature",
            sig.to_str().expect("utf-8"),
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "a SubjectPublicKeyInfo PEM reads too: {}",
            stdout(&out)
        );
    } else {
        println!("openssl is not installed: the interoperability half is not checked");
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn publish_to_a_directory_feeds_a_signed_file_source() {
    let dir = scratch("publish");
    let site = dir.join("site");
    let base = dir.join("release");
    assert_eq!(run(&["keygen", "--out", base.to_str().expect("utf-8")]).status.code(), Some(0));
    let public = std::fs::read_to_string(dir.join("release.pub")).expect("public key");
    let key = dir.join("release.key");
    let publish = |version: u64| {
        let file = dir.join(format!("v{version}.json"));
        std::fs::write(&file, format!(r#"{{ "version": {version} }}"#)).expect("write");
        run(&[
            "publish",
            file.to_str().expect("utf-8"),
            "--to",
            site.to_str().expect("utf-8"),
            "--sign",
            key.to_str().expect("utf-8"),
        ])
    };
    let out = publish(1);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("published version 1 to directory"), "{}", stdout(&out));
    let store = std::sync::Arc::new(FlagStore::new());
    let updater = flagstone::Updater::builder(store.clone())
        .file(site.join("flags.json"))
        .public_key_base64(public.trim())
        .interval(std::time::Duration::from_secs(3600))
        .start()
        .expect("start");
    assert!(updater.refresh_now().is_ok());
    for version in 2..=6 {
        assert_eq!(publish(version).status.code(), Some(0));
        assert_eq!(
            updater.refresh_now().expect("signed pair"),
            flagstone::Refreshed::Applied(version)
        );
    }
    let stale = publish(3);
    assert_eq!(stale.status.code(), Some(1));
    assert!(stderr(&stale).contains("not newer than version 6"), "{}", stderr(&stale));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn validate_notes_a_guard_without_a_holdback() {
    let dir = scratch("notes");
    let file = dir.join("flags.json");
    std::fs::write(
        &file,
        r#"{ "version": 1, "flags": { "f": { "enabled": true, "stages": [ { "name": "canary", "percent": 5 } ],
            "stage": "canary", "guard": { "max_error_ratio": 2 } } } }"#,
    )
    .expect("write");
    let out = run(&["validate", file.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("note: flags.f.guard: no holdback"), "{}", stdout(&out));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn import_unleash_writes_a_config_that_validates_and_prints_warnings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("unleash.json");
    std::fs::write(
        &source,
        r#"{ "version": 1, "features": [
            { "name": "checkout", "enabled": true, "strategies": [
                { "name": "flexibleRollout", "parameters": { "rollout": "25", "stickiness": "default" } } ] } ] }"#,
    )
    .expect("write");
    let target = dir.path().join("flags.json");
    let target_arg = target.to_string_lossy().into_owned();
    let source_arg = source.to_string_lossy().into_owned();
    let out = run(&["import", "unleash", &source_arg, "-o", &target_arg, "--version", "42"]);
    assert_clean(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("1 flags"), "{}", stdout(&out));
    assert!(stderr(&out).contains("warning: feature \"checkout\""), "{}", stderr(&out));
    let config = flagstone::config::Config::from_json(std::fs::read(&target).expect("written"))
        .expect("a valid config");
    assert_eq!(config.version, 42);
    let out = run(&["validate", &target_arg]);
    assert!(out.status.success(), "{}", stdout(&out));

    // Not an Unleash document: exit 1, saying what is missing.
    let out = run(&["import", "unleash", EXAMPLE]);
    assert_clean(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not an Unleash features document"), "{}", stderr(&out));
    assert!(stderr(&out).contains("\"features\""), "{}", stderr(&out));
}

#[test]
fn bucket_shows_unleash_normalized_hashes() {
    let out = run(&["bucket", "--unleash", "--salt", "AB12A", "122", "155", "--json"]);
    assert_clean(&out);
    let rows = json(&out);
    assert_eq!(rows[0]["normalized"], 23);
    assert_eq!(rows[1]["normalized"], 100);
}

/// Issue 18, item 13: the top-level help describes the tool and its exit
/// codes, not the library.
#[test]
fn the_top_level_help_describes_the_tool_and_its_exit_codes() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.starts_with("flagstone: know what a flag config push will do"), "{text}");
    assert!(!text.contains("lock-free flag store"), "not the library's description: {text}");
    for code in ["Exit codes:", "  0  fine", "  1  an error", "  2  diff found changes"] {
        assert!(text.contains(code), "{code:?} in {text}");
    }
}

/// Issue 18, item 9: ready to publish: licence files, links, docs.rs badges.
#[test]
fn the_crate_is_ready_to_publish() {
    let manifest = std::fs::read_to_string("Cargo.toml").expect("manifest");
    for key in [
        "repository = ",
        "documentation = ",
        "homepage = ",
        "rustdoc-args = [\"--cfg\", \"docsrs\"]",
    ] {
        assert!(manifest.contains(key), "{key} in Cargo.toml");
    }
    for file in ["LICENSE-MIT", "LICENSE-APACHE"] {
        let text = std::fs::read_to_string(file).unwrap_or_else(|_| panic!("{file}"));
        assert!(text.len() > 1000, "{file} holds the licence");
    }
    let lib = std::fs::read_to_string("src/lib.rs").expect("lib");
    assert!(lib.contains("#![cfg_attr(docsrs, feature(doc_cfg))]"));
}

/// Issue 18, item 12: `flagstone lint` warns, with paths, about what a
/// valid config probably did not mean; exit 0 unless `--strict`.
#[test]
fn lint_warns_with_paths_and_fails_only_when_strict() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("flags.json");
    std::fs::write(
        &file,
        r#"{ "version": 1,
          "cohorts": { "staff": { "tenants": ["t-1"] }, "unused": { "tenants": ["t-2"] } },
          "flags": {
            "f": { "enabled": true, "bucket_by": "tenant",
              "stages": [ { "name": "internal", "cohorts": ["staff"] },
                          { "name": "again", "cohorts": ["staff"], "percent": 50 },
                          { "name": "nobody", "percent": 0 },
                          { "name": "later", "percent": 5, "start_at": "2026-01-01T00:00:00Z" },
                          { "name": "all" },
                          { "name": "after-all", "percent": 10 } ],
              "stage": "all",
              "guard": { "max_error_ratio": 2.0 } } } }"#,
    )
    .expect("write");
    let path = file.to_str().expect("path");
    let out = run(&["lint", path, "--json", "--at", "2026-12-01T00:00:00Z"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    let warnings: Vec<String> = report["files"][0]["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .map(|w| w["path"].as_str().expect("path").to_owned())
        .collect();
    assert_eq!(
        warnings,
        [
            "cohorts.unused",
            "flags.f.guard",
            "flags.f.stages[1].cohorts[0]",
            "flags.f.stages[2].percent",
            "flags.f.stages[3].start_at",
            "flags.f.stages[5]",
        ]
    );
    let strict = run(&["lint", path, "--strict", "--at", "2026-12-01T00:00:00Z"]);
    assert_eq!(strict.status.code(), Some(1));
    assert!(stdout(&strict).contains("6 warning(s)"), "{}", stdout(&strict));
    let clean = run(&[
        "lint",
        "--strict",
        "tests/it/testdata/example.json",
        "--at",
        "2026-11-01T00:00:00Z",
    ]);
    assert_eq!(clean.status.code(), Some(1), "the fixture has an unused cohort");
}

/// Issue 18, item 11: `--format markdown` for diff, plan and validate; an
/// exact and an estimated `diff --json` share one schema.
#[test]
fn markdown_for_reviews_and_one_diff_schema() {
    let out = run(&["diff", EXAMPLE, NEXT, "--format", "markdown"]);
    assert_eq!(out.status.code(), Some(2));
    let text = stdout(&out);
    assert!(
        text.starts_with("### flagstone diff: version 7 → 8\n\n**2 changes** in 1 flag."),
        "{text}"
    );
    assert!(text.contains("| flag | change | reversible |\n|---|---|---|\n"), "{text}");
    assert!(text.contains("#### Blast radius (estimated"), "{text}");
    let plan = stdout(&run(&["plan", EXAMPLE, "--format", "markdown"]));
    assert!(plan.contains("#### new-checkout") && plan.contains("| # | stage |"), "{plan}");
    let validate = run(&["validate", EXAMPLE, BAD, "--format", "markdown"]);
    assert_eq!(validate.status.code(), Some(1));
    let validate = stdout(&validate);
    assert!(validate.contains("| `tests/it/testdata/bad.json` | **invalid**"), "{validate}");

    let shape = |v: &serde_json::Value| -> Vec<String> {
        let mut keys: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        keys.sort();
        keys
    };
    let estimated = json(&run(&["diff", EXAMPLE, NEXT, "--json"]));
    let exact = json(&run(&[
        "diff",
        EXAMPLE,
        NEXT,
        "--json",
        "--population",
        "tests/it/testdata/population.csv",
    ]));
    let (e, x) =
        (&estimated["blast_radius"]["new-checkout"], &exact["blast_radius"]["new-checkout"]);
    assert_eq!(shape(e), shape(x), "one schema:\n{e}\n{x}");
    assert_eq!(shape(&e["exposure"]["before"]), shape(&x["exposure"]["after"]));
    assert_eq!((e["estimated"].as_bool(), x["estimated"].as_bool()), (Some(true), Some(false)));
    assert!(e["off_to_on"]["share"].as_f64().expect("share") > 0.0);
    assert!(x["off_to_on"]["units"].as_u64().expect("units") > 0);
}

/// Issue 18, item 10: `diff` warns when an exclusion is dropped or shrunk,
/// counts the units a variant reweighting moves, and warns when a flag
/// buckets by an attribute the population never carries.
#[test]
fn diff_warns_about_exposure_it_would_otherwise_hide() {
    let dir = tempfile::tempdir().expect("dir");
    let doc = |version: u64, banks: &str, exclude: &str, weights: (u32, u32), by: &str| {
        format!(
            r#"{{ "version": {version},
              "cohorts": {{ "banks": {{ "tenants": [{banks}] }}, "beta": {{ "tenants": ["t-1"] }} }},
              "flags": {{
                "f": {{ "enabled": true, "bucket_by": "tenant", "exclude": [{exclude}],
                  "stages": [ {{ "name": "beta", "cohorts": ["beta"] }} ], "stage": "beta" }},
                "g": {{ "enabled": true, "bucket_by": "tenant", "exclude": ["banks"],
                  "stages": [ {{ "name": "all" }} ], "stage": "all",
                  "variants": [ {{ "name": "a", "weight": {} }}, {{ "name": "b", "weight": {} }} ] }},
                "h": {{ "enabled": true, "bucket_by": "{by}",
                  "stages": [ {{ "name": "five", "percent": 5 }} ], "stage": "five" }} }} }}"#,
            weights.0, weights.1
        )
    };
    let old = dir.path().join("old.json");
    let new = dir.path().join("new.json");
    std::fs::write(&old, doc(1, r#""bank-1", "bank-2""#, r#""banks""#, (50, 50), "tenant"))
        .expect("old");
    std::fs::write(&new, doc(2, r#""bank-1""#, "", (25, 75), "seats")).expect("new");
    let out = run(&[
        "diff",
        old.to_str().expect("path"),
        new.to_str().expect("path"),
        "--json",
        "--population",
        "tests/it/testdata/population.csv",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let report = json(&out);
    let warnings: Vec<&str> = report["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter_map(|w| w.as_str())
        .collect();
    let has = |needle: &str| warnings.iter().any(|w| w.contains(needle));
    assert!(has("\"f\" no longer excludes banks"), "{warnings:#?}");
    assert!(
        has("cohort \"banks\" shrinks by 1 (tenants:bank-2), and flag g excludes it"),
        "{warnings:#?}"
    );
    assert!(has("about 25.0% of the units given a variant get another one"), "{warnings:#?}");
    assert!(has("\"h\" buckets by seats, which no unit of"), "{warnings:#?}");
}

/// Issue 19: the CLI on a data migration: `validate` refuses a plan that
/// reads the new store before dual-writing, `plan` shows each stage's step
/// and what it means for the data, `diff` marks entering `complete`
/// irreversible, and `explain` says the step and why.
#[test]
fn the_cli_classifies_a_data_migration() {
    let dir = tempfile::tempdir().expect("dir");
    let doc = |version: u64, stage: &str, first: &str| {
        format!(
            r#"{{ "version": {version},
          "cohorts": {{ "internal": {{ "tenants": ["acme"] }} }},
          "flags": {{ "users-split": {{ "enabled": true, "migration": true, "bucket_by": "tenant",
            "stages": [ {{ "name": "all-{first}", "step": "{first}" }},
                        {{ "name": "internal-live", "cohorts": ["internal"], "step": "live" }},
                        {{ "name": "all-complete", "step": "complete" }} ],
            "stage": "{stage}" }} }} }}"#
        )
    };
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("written");
        path.display().to_string()
    };
    let bad = write("bad.json", doc(1, "all-shadow", "shadow"));
    let out = run(&["validate", &bad]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out)
            .contains("flags.users-split.stages[0].step: shadow with no dualwrite stage before it"),
        "{}",
        stdout(&out)
    );

    let v1 = write("v1.json", doc(1, "internal-live", "dualwrite"));
    let v2 = write("v2.json", doc(2, "all-complete", "dualwrite"));
    let plan = stdout(&run(&["plan", &v1]));
    for expected in ["step", "dualwrite", "live", "IRREVERSIBLE for data"] {
        assert!(plan.contains(expected), "{expected:?} missing from:\n{plan}");
    }
    let out = run(&["diff", &v1, &v2]);
    let text = stdout(&out);
    assert!(text.contains("stage all-complete: migration step off ->"), "{text}");
    assert!(text.contains("irreversible for data"), "{text}");
    let why = stdout(&run(&["explain", &v1, "--flag", "users-split", "--tenant", "acme"]));
    assert!(why.contains("step         live"), "{why}");
    assert_clean(&out);
}
