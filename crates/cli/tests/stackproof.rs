//! The `stackproof` binary as a user runs it after `cargo install --path crates/cli`: from an
//! empty folder of their own (no checkout, no `STACKPROOF_STATE_DIR`), with the sample-app
//! installed beside it as `stackproof-sample-app`.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The tests that start a sandbox run one at a time: two data planes placing tasks at the same
/// moment could each find the same loopback address free.
static ONE_SANDBOX: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_sandbox() -> std::sync::MutexGuard<'static, ()> {
    ONE_SANDBOX
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An empty working folder; at the end a sandbox a failed assertion left running is stopped by
/// its recorded pid, and the folder is removed.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(name: &str) -> WorkDir {
        let dir =
            std::env::temp_dir().join(format!("stackproof-bin-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        WorkDir(dir)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Ok(state) = std::fs::read_to_string(self.0.join("work/.stackproof/sandbox.json"))
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&state)
            && let Some(pid) = v["pid"].as_u64()
        {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The installed layout in `bin/` of `dir`: `stackproof` and `stackproof-sample-app` side by
/// side, as `cargo install` leaves them (linked, else copied, from the build). In the build's
/// own folder a `sample-app` of the workspace would be found first.
fn install(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let built = Path::new(env!("CARGO_BIN_EXE_stackproof"));
    for name in ["stackproof", "stackproof-sample-app"] {
        let from = built.with_file_name(name);
        assert!(from.is_file(), "{} is built", from.display());
        let to = bin.join(name);
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).unwrap();
        }
    }
    bin.join("stackproof")
}

/// Runs `program ARGS` in `dir`, as a user would: no state folder or sample-app named by the
/// environment, no cargo variables, stdin closed.
fn run(program: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .env_remove("STACKPROOF_STATE_DIR")
        .env_remove("STACKPROOF_SAMPLE_APP")
        .env_remove("CARGO_MANIFEST_DIR")
        .env_remove("AWS_PROFILE")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// Runs the built `stackproof ARGS` in `dir`.
fn stackproof(dir: &Path, args: &[&str]) -> Output {
    run(Path::new(env!("CARGO_BIN_EXE_stackproof")), dir, args)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn version_completions_and_usage_errors() {
    let dir = WorkDir::new("version");
    let out = stackproof(&dir.0, &["--version"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("stackproof {}", env!("CARGO_PKG_VERSION"))
    );

    let out = stackproof(&dir.0, &["completions", "bash"]);
    assert!(out.status.success(), "{}", text(&out));
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(script.contains("complete -F _stackproof"), "{script}");
    for command in [
        "deploy", "plan", "status", "destroy", "loadtest", "check", "sandbox", "init", "image",
    ] {
        assert!(script.contains(command), "{command} missing from {script}");
    }
    // The project's own tasks are cargo xtask's, not the tool's.
    assert!(!script.contains("bench"), "{script}");

    let out = stackproof(&dir.0, &["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("invalid value 'tcsh'"),
        "{}",
        text(&out)
    );
    // Durations take units, as k6 writes them; an option renamed for it says its new form.
    let out = stackproof(&dir.0, &["loadtest", "--baseline-s", "20"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("--baseline-s is now --baseline, a duration with its unit")
            && text(&out).contains(": --baseline 20s"),
        "{}",
        text(&out)
    );
    let out = stackproof(&dir.0, &["check", "--duration", "30"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("has no unit: write 30s for seconds"),
        "{}",
        text(&out)
    );
    // Out of range: every problem at once, named as the option, before anything is read (no
    // sandbox runs here).
    let out = stackproof(
        &dir.0,
        &[
            "loadtest",
            "--baseline",
            "0s",
            "--p99",
            "0ms",
            "--fault-max",
            "5s",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    for problem in ["--baseline = 0s", "--p99 = 0ms", "--fault-max = 5s"] {
        assert!(text(&out).contains(problem), "{problem}: {}", text(&out));
    }
    // A distributed run's options too, before anything is read.
    let out = stackproof(
        &dir.0,
        &[
            "loadtest",
            "--workers",
            "0",
            "--rps",
            "0",
            "--duration",
            "0s",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    for problem in ["--workers = 0", "--rps = 0", "--duration = 0s"] {
        assert!(text(&out).contains(problem), "{problem}: {}", text(&out));
    }
    // Nothing was written in the working folder by any of these.
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0);
}

#[test]
fn deploys_checks_and_destroys_from_an_empty_folder() {
    let _one = one_sandbox();
    let dir = WorkDir::new("empty");
    let stackproof_bin = install(&dir.0);
    let here = &dir.0.join("work");
    std::fs::create_dir_all(here).unwrap();
    let stackproof = |dir: &Path, args: &[&str]| run(&stackproof_bin, dir, args);

    // `init` writes the configuration into the working folder, and hints name the binary.
    let out = stackproof(here, &["init"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(here.join("stack.toml").is_file());
    assert!(
        text(&out).contains("then run `stackproof plan`"),
        "{}",
        text(&out)
    );
    let toml = std::fs::read_to_string(here.join("stack.toml")).unwrap();
    // The configuration found is the working folder's: a stack name set there shows in plan;
    // force-destroy, because the load balancer's access logs of the check land in the bucket.
    assert!(toml.contains("\nname = \"stackproof\"\n"), "{toml}");
    // A Multi-AZ database and cache too: the sandbox runs a PostgreSQL pair and two Redis nodes.
    let edited = toml
        .replace("\nname = \"stackproof\"\n", "\nname = \"fromhere\"\n")
        .replacen("\nforce-destroy = false\n", "\nforce-destroy = true\n", 1)
        + "\n[database]\ndeletion-protection = false\nskip-final-snapshot = true\n[cache]\n";
    assert!(edited.contains("\nforce-destroy = true\n"), "{edited}");
    std::fs::write(here.join("stack.toml"), edited).unwrap();

    let out = stackproof(here, &["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("`stackproof deploy` starts it"),
        "{}",
        text(&out)
    );

    let out = stackproof(here, &["sandbox", "start", "--clock", "fast"]);
    assert!(out.status.success(), "{}", text(&out));
    // The sandbox's state is in the working folder.
    assert!(here.join(".stackproof/sandbox.json").is_file());

    let out = stackproof(here, &["deploy", "--yes"]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("done + network vpc \"vpc\" -> vpc-"),
        "{shown}"
    );
    assert!(shown.contains("fromhere-alb"), "{shown}");
    // The tasks run the installed stackproof-sample-app and serve in both zones.
    assert!(
        shown.contains("Service steady: 2/2 tasks running"),
        "{shown}"
    );
    let logs: Vec<String> = std::fs::read_dir(here.join(".stackproof/tasks"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect();
    assert!(
        logs.iter().any(|l| l.contains("sample-app: listening on")),
        "{logs:?}"
    );

    let out = stackproof(here, &["check", "--rps", "5", "--duration", "4s"]);
    assert!(out.status.success(), "{}", text(&out));

    // `sandbox status` shows where the database's two servers and the cache's two nodes run,
    // once they do.
    let mut shown = String::new();
    let both_up = |shown: &str| {
        shown.lines().any(|l| {
            l.contains("database fromhere-db fromhere-db.")
                && l.contains(": available; primary 127.0.")
                && l.contains(", standby 127.0.")
        }) && shown.lines().any(|l| {
            l.contains("cache fromhere-cache master.fromhere-cache.")
                && l.contains(": available; primary 127.0.")
                && l.contains(", replicas 127.0.")
        })
    };
    for _ in 0..100 {
        shown = text(&stackproof(here, &["sandbox", "status"]));
        if both_up(&shown) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(both_up(&shown), "{shown}");

    let out = stackproof(here, &["destroy", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Destroy complete: "), "{}", text(&out));
    let out = stackproof(here, &["sandbox", "stop"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!here.join(".stackproof/sandbox.json").exists());
}

/// The text of every task log of the sandbox (`.stackproof/tasks/*.log`).
fn task_logs(here: &Path) -> Vec<String> {
    std::fs::read_dir(here.join(".stackproof/tasks"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The pid a generator's log gives for `generator {share} (pid N)`, once it sends its share.
fn sending_generator(here: &Path, share: &str) -> Option<u32> {
    task_logs(here).iter().find_map(|log| {
        if !log.contains(&format!("generator {share}: sending its share")) {
            return None;
        }
        let at = log.find(&format!("generator {share} (pid "))?;
        let rest = &log[at + format!("generator {share} (pid ").len()..];
        rest.split(')').next()?.parse().ok()
    })
}

#[test]
fn distributes_the_load_over_ecs_tasks_and_adds_it_exactly() {
    let _one = one_sandbox();
    let dir = WorkDir::new("workers");
    let stackproof_bin = install(&dir.0);
    let here = &dir.0.join("work");
    std::fs::create_dir_all(here).unwrap();
    let stackproof = |args: &[&str]| run(&stackproof_bin, here, args);
    assert!(stackproof(&["init"]).status.success());
    let toml = std::fs::read_to_string(here.join("stack.toml")).unwrap();
    let edited = toml.replacen("\nforce-destroy = false\n", "\nforce-destroy = true\n", 1);
    std::fs::write(here.join("stack.toml"), edited).unwrap();
    assert!(
        stackproof(&["sandbox", "start", "--clock", "fast"])
            .status
            .success()
    );
    let out = stackproof(&["deploy", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));

    // Four generators launched with RunTask share 400 requests/s for 4 s.
    let out = stackproof(&[
        "loadtest",
        "--workers",
        "4",
        "--rps",
        "400",
        "--duration",
        "4s",
    ]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("Verdict: PASS"), "{shown}");
    let logs = task_logs(here);
    for i in 0..4 {
        // Each ran as a task of its own (the sandbox ran `stackproof loadgen` for it) and sent
        // exactly its quarter of the 1600 scheduled requests.
        assert!(
            logs.iter()
                .any(|l| l.contains(&format!("generator {i}/4: done, 400 sent"))),
            "generator {i}: {logs:?}"
        );
    }
    let out_dir = here.join(".stackproof/loadtest");
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("distributed.json")).unwrap())
            .unwrap();
    let workers = run["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 4);
    assert!(workers.iter().all(|w| w["state"] == "finished"), "{run}");
    // Spread over the zones: two generators in each.
    for zone in ["eu-west-1a", "eu-west-1b"] {
        assert_eq!(
            workers.iter().filter(|w| w["zone"] == zone).count(),
            2,
            "{run}"
        );
    }
    assert!(run["invalid"].as_array().unwrap().is_empty(), "{run}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["scheduled"], 1600, "{report}");
    assert_eq!(report["sent"], 1600, "{report}");
    // The merged percentiles are those of the generators' own latencies added: each
    // generator's interval log, summed here, gives the same numbers to the last bit.
    let worker_logs: Vec<Vec<u8>> = (0..4)
        .map(|i| std::fs::read(out_dir.join(format!("worker-{i}.hlog"))).unwrap())
        .collect();
    let refs: Vec<&[u8]> = worker_logs.iter().map(Vec::as_slice).collect();
    let added = loadtest::merge_interval_logs(&refs).unwrap().percentiles();
    let merged = &report["latency_ms"]["corrected"];
    assert_eq!(merged["count"], added.count);
    assert_eq!(report["completed"], added.count);
    for (name, value) in [
        ("p50", added.p50),
        ("p99", added.p99),
        ("p99_9", added.p99_9),
        ("max", added.max),
    ] {
        assert_eq!(merged[name].as_f64(), Some(value), "{name}: {merged}");
    }

    // A generator killed mid-run: the run is invalid (exit 6), names it and its unsent share,
    // and the coordinator stops the other generator before it returns.
    let _ = std::fs::remove_dir_all(here.join(".stackproof/tasks"));
    let child = Command::new(&stackproof_bin)
        .args([
            "loadtest",
            "--workers",
            "2",
            "--rps",
            "100",
            "--duration",
            "30s",
        ])
        .current_dir(here)
        .env_remove("STACKPROOF_STATE_DIR")
        .env_remove("STACKPROOF_SAMPLE_APP")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut victim = None;
    let mut other = None;
    for _ in 0..240 {
        victim = sending_generator(here, "1/2");
        other = sending_generator(here, "0/2");
        if victim.is_some() && other.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let (victim, other) = (victim.expect("generator 1/2 started"), other.unwrap());
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        Command::new("kill")
            .args(["-KILL", &victim.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(6), "{shown}");
    assert!(shown.contains("Verdict: INVALID"), "{shown}");
    assert!(
        shown.contains("generator 1: its task stopped (Essential container in task exited, exit code 137) without a report;"),
        "{shown}"
    );
    assert!(shown.contains("of its 1500 requests unsent"), "{shown}");
    // The other generator was stopped through ECS: its process is gone soon after.
    let gone = (0..40).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(250));
        !Path::new(&format!("/proc/{other}")).exists()
    });
    assert!(gone, "generator 0/2 (pid {other}) still runs");

    let out = stackproof(&["destroy", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(stackproof(&["sandbox", "stop"]).status.success());
}
