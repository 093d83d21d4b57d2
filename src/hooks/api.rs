//! The API hooks get: the sandboxed engine plus `log`, `run_local`, `env`, `now`,
//! `identity`, `format_utc`, `skip_node` and `abort`.

use crate::repo::rhai_engine;
use rhai::{Dynamic, Engine, EvalAltResult, FLOAT, INT, Map};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::*;

/// The engine hooks run in: the shared sandbox plus the functions hooks-examples/README.md
/// promises.
pub(super) fn build_engine(repo_path: &Path, outlet: Outlet, options: HookOptions) -> Engine {
    // A log line is an event for the renderers only (never a hook point): emitting it while
    // the hook runs inside an emit cannot reach the hooks again.
    let log: rhai_engine::LogFn = Arc::new(move |source, text| {
        let file = source.map(|s| {
            Path::new(s)
                .file_name()
                .map_or(s.to_string(), |f| f.to_string_lossy().into_owned())
        });
        outlet.emit(&crate::events::Event::Report(
            crate::events::Report::HookLog {
                file: file.as_deref(),
                message: text,
            },
        ));
    });
    let sandbox = crate::repo::Sandbox::new(repo_path, options.allow_external_symlinks);
    let mut engine = rhai_engine::engine_with_log(&sandbox, log);
    let options = Arc::new(options);

    let o = options.clone();
    engine.register_fn("env", move |name: &str| -> String {
        o.env
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
            .unwrap_or_default()
    });

    let o = options.clone();
    engine.register_fn("now", move || -> FLOAT {
        o.now.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        }) as FLOAT
    });

    // Who cinch acts as (lock owner), so hooks never guess it from `$USER`.
    let o = options.clone();
    engine.register_fn("identity", move || -> String {
        match o.env.get("CINCH_IDENTITY").filter(|v| !v.trim().is_empty()) {
            Some(id) => id.clone(),
            None => crate::lock::identity(),
        }
    });

    // Times for people carry their zone: UTC RFC 3339, like the JSON output.
    engine.register_fn("format_utc", |secs: INT| crate::lock::rfc3339(secs));
    engine.register_fn("format_utc", |secs: FLOAT| {
        crate::lock::rfc3339(secs.floor() as i64)
    });

    let runner = {
        let o = options.clone();
        let cwd = repo_path.to_path_buf();
        Arc::new(move |ctx: &rhai::NativeCallContext, cmd: &str, secs: f64| {
            run_local(&cwd, &o.env, cmd, secs).map_err(|msg| {
                Box::new(EvalAltResult::ErrorRuntime(
                    format!("run_local: {msg}").into(),
                    ctx.call_position(),
                ))
            })
        })
    };
    let r = runner.clone();
    engine.register_fn(
        "run_local",
        move |ctx: rhai::NativeCallContext, cmd: &str| r(&ctx, cmd, RUN_LOCAL_TIMEOUT),
    );
    let r = runner.clone();
    engine.register_fn(
        "run_local",
        move |ctx: rhai::NativeCallContext, cmd: &str, secs: FLOAT| r(&ctx, cmd, secs),
    );
    let r = runner;
    engine.register_fn(
        "run_local",
        move |ctx: rhai::NativeCallContext, cmd: &str, secs: INT| r(&ctx, cmd, secs as f64),
    );

    engine.register_fn("quote", |s: &str| crate::shell::quote(s));

    for (kind, fn_name) in [("skip_node", "skip_node"), ("abort", "abort")] {
        engine.register_fn(
            fn_name,
            move |ctx: rhai::NativeCallContext, reason: &str| -> Result<(), Box<EvalAltResult>> {
                let mut m = Map::new();
                m.insert(FLOW_TAG.into(), Dynamic::from(kind.to_string()));
                m.insert("reason".into(), Dynamic::from(reason.to_string()));
                Err(Box::new(EvalAltResult::ErrorRuntime(
                    Dynamic::from_map(m),
                    ctx.call_position(),
                )))
            },
        );
    }
    engine
}

/// Seconds a `run_local` command may take unless the hook passes its own limit.
pub const RUN_LOCAL_TIMEOUT: f64 = 300.0;

/// `sh -c cmd` on the control machine, in the repo, killed (with everything it started) after
/// `timeout` seconds or on a second Ctrl-C, so a hook can never hang cinch.
pub(super) fn run_local(
    cwd: &Path,
    env: &HashMap<String, String>,
    cmd: &str,
    timeout: f64,
) -> Result<Map, String> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(cwd)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout can kill what the command started too.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start sh: {e}"))?;
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(timeout.max(0.0));
    let mut nap = std::time::Duration::from_micros(200);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if crate::interrupt::forced() => break Err("interrupted".to_string()),
            Ok(None) if std::time::Instant::now() >= deadline => {
                break Err(format!("timed out after {timeout}s: {cmd}"));
            }
            Ok(None) => {
                std::thread::sleep(nap);
                nap = (nap * 2).min(std::time::Duration::from_millis(20));
            }
            Err(e) => break Err(format!("waiting for sh: {e}")),
        }
    };
    // SAFETY: kill(2) on the process group we created; no memory is touched.
    let kill_group = || unsafe {
        libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
    };
    let status = match status {
        Ok(s) => s,
        Err(msg) => {
            kill_group();
            let _ = child.wait();
            return Err(msg);
        }
    };
    // Something the command left running in the background may hold its output open: wait
    // for that only until the deadline.
    while !(stdout.is_finished() && stderr.is_finished()) {
        if std::time::Instant::now() >= deadline || crate::interrupt::forced() {
            kill_group();
            std::thread::sleep(std::time::Duration::from_millis(50));
            if !(stdout.is_finished() && stderr.is_finished()) {
                return Err(format!("output still open after {timeout}s: {cmd}"));
            }
        }
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
    let rc = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    let text = |h: std::thread::JoinHandle<Vec<u8>>| {
        Dynamic::from(String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned())
    };
    let mut m = Map::new();
    m.insert("rc".into(), Dynamic::from_int(rc as INT));
    m.insert("stdout".into(), text(stdout));
    m.insert("stderr".into(), text(stderr));
    Ok(m)
}
