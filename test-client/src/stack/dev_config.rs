//! The config `wrangler dev` gets for each Worker: its `wrangler.toml` with the custom
//! build taken out (run once per process instead) and, in binding mode, a name of its own
//! or a Durable Object binding added ([`ConfigChange`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use super::tail;

/// A Worker's `wrangler.toml` taken apart: the command of its custom `[build]`, and the
/// rest of it with `main` made absolute, so that it works from anywhere.
struct CustomBuild {
    /// `None`: the Worker has no custom build (wrangler bundles it).
    command: Option<String>,
    /// Where the command runs (`[build] cwd`, else the Worker's folder).
    cwd: PathBuf,
    config: String,
}

/// Splits `toml` (the `wrangler.toml` of the Worker in `dir`); `None` when it has no
/// `[build]` table with a `command`.
fn custom_build(dir: &Path, toml: &str) -> Option<CustomBuild> {
    split(dir, toml).filter(|b| b.command.is_some())
}

fn split(dir: &Path, toml: &str) -> Option<CustomBuild> {
    let (mut command, mut cwd, mut config) = (None, dir.to_owned(), String::new());
    let mut table = String::new();
    let value = |line: &str, key: &str| -> Option<String> {
        let rest = line.trim().strip_prefix(key)?.trim_start().strip_prefix('=')?.trim();
        let quote = rest.chars().next().filter(|q| *q == '"' || *q == '\'')?;
        Some(rest[1..].rsplit_once(quote)?.0.to_owned())
    };
    for line in toml.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            table = trimmed.split(']').next().unwrap_or_default().trim_start_matches('[').trim().to_owned();
        }
        if table == "build" {
            if let Some(c) = value(line, "command") {
                command = Some(c);
            } else if let Some(c) = value(line, "cwd") {
                cwd = dir.join(c);
            }
            continue;
        }
        match value(line, "main").filter(|_| table.is_empty()) {
            Some(main) => {
                let main = dir.join(main).display().to_string();
                config.push_str(&format!("main = \"{}\"\n", main.replace('\\', "\\\\").replace('"', "\\\"")));
            }
            None => {
                config.push_str(line);
                config.push('\n');
            }
        }
    }
    Some(CustomBuild { command, cwd, config })
}

/// The Worker folders this process has built.
static BUILT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Runs the custom builds of the Workers in `dirs` that this process has not built yet,
/// side by side.
pub(super) fn build_once(dirs: &[&Path]) -> Result<()> {
    let mut built = BUILT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let todo: Vec<(PathBuf, String, PathBuf)> = dirs
        .iter()
        .filter(|d| !built.iter().any(|b| b == *d))
        .filter_map(|d| {
            let toml = std::fs::read_to_string(d.join("wrangler.toml")).ok()?;
            let b = custom_build(d, &toml)?;
            Some((d.to_path_buf(), b.command?, b.cwd))
        })
        .collect();
    let results: Vec<Result<PathBuf>> = std::thread::scope(|scope| {
        let runs: Vec<_> = todo
            .iter()
            .map(|(dir, command, cwd)| {
                scope.spawn(move || -> Result<PathBuf> {
                    let started = Instant::now();
                    let out = Command::new("sh")
                        .arg("-c")
                        .arg(command)
                        .current_dir(cwd)
                        .stdin(Stdio::null())
                        .output()
                        .with_context(|| format!("running {command:?}"))?;
                    if !out.status.success() {
                        let log =
                            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                        bail!("{command:?} in {} failed ({}):\n{}", cwd.display(), out.status, tail(&log, 40));
                    }
                    eprintln!("built {} in {:.1} s", dir.display(), started.elapsed().as_secs_f64());
                    Ok(dir.clone())
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a build thread panicked")))).collect()
    });
    for r in results {
        built.push(r?);
    }
    Ok(())
}

/// The `--config` for `wrangler dev` of the Worker in `dir`, written to `path`: its
/// `wrangler.toml` without the custom `[build]`, which [`build_once`] has run instead;
/// `None` for a Worker without one (then `wrangler dev` reads its own). `wrangler dev`
/// runs a custom build at every start, twice (wrangler 4.86: for the entry point, and
/// again once its file watcher is ready), and again whenever a watched file changes: on
/// two cores that was 15–20 s of a stack's 20–30 s start, and a reload in the middle of a
/// test when someone saved a source file. Built once per process, a Worker starts in ~2 s.
pub(super) fn dev_config(dir: &Path, path: &Path, change: &ConfigChange) -> Result<Option<PathBuf>> {
    let Ok(toml) = std::fs::read_to_string(dir.join("wrangler.toml")) else { return Ok(None) };
    let Some(split) = split(dir, &toml) else { return Ok(None) };
    if split.command.is_none() && *change == ConfigChange::default() {
        return Ok(None);
    }
    build_once(&[dir])?;
    std::fs::write(path, change.apply(&split.config)).context("writing the wrangler dev config")?;
    Ok(Some(path.to_owned()))
}

/// What binding mode changes in a Worker's dev config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigChange {
    /// Another `name`: each stack's backend registers under a name of its own with
    /// wrangler's dev registry, so that a snippet bound to it never reaches another
    /// stack's backend.
    pub name: Option<String>,
    /// TOML appended (a `[[durable_objects.bindings]]` entry).
    pub append: String,
}

impl ConfigChange {
    fn apply(&self, config: &str) -> String {
        let mut out = String::new();
        let mut top_level = true;
        for line in config.lines() {
            top_level &= !line.trim_start().starts_with('[');
            match &self.name {
                Some(name) if top_level && line.trim_start().starts_with("name ") => {
                    out.push_str(&format!("name = \"{name}\"\n"));
                }
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out.push_str(&self.append);
        out
    }

    /// A binding `binding` of the snippet to class `class` of the Worker named `script`.
    pub fn bind(binding: &str, class: &str, script: &str) -> ConfigChange {
        let append = format!(
            "\n[[durable_objects.bindings]]\nname = \"{binding}\"\nclass_name = \"{class}\"\nscript_name = \"{script}\"\n"
        );
        ConfigChange { name: None, append }
    }
}

/// Whether the Worker in `dir` has a custom build (then its dev config can be changed).
pub fn has_custom_build(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("wrangler.toml")).is_ok_and(|toml| custom_build(dir, &toml).is_some())
}

/// The class of the first Durable Object binding in the `wrangler.toml` of `dir`.
pub fn object_class(dir: &Path) -> Result<String> {
    let toml = std::fs::read_to_string(dir.join("wrangler.toml")).context("reading wrangler.toml")?;
    toml.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("class_name")?
                .trim_start()
                .strip_prefix('=')?
                .trim()
                .strip_prefix('"')?
                .split('"')
                .next()
                .map(str::to_owned)
        })
        .with_context(|| format!("no class_name in {}/wrangler.toml", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The copy `wrangler dev` runs keeps everything but `[build]`, with `main` absolute.
    #[test]
    fn a_custom_build_is_taken_out_of_the_config() {
        let toml = "name = \"w\"\nmain = \"build/index.js\"\n\n[build]\ncommand = \"bash ../b.sh w\"\n\
                    watch_dir = [\"src\", \"../p/src\"]\n\n[[durable_objects.bindings]]\nname = \"DB\"\n\
                    [triggers]\ncrons = [\"* * * * *\"]\n";
        let b = custom_build(Path::new("/repo/w"), toml).expect("a custom build");
        assert_eq!(b.command.as_deref(), Some("bash ../b.sh w"));
        assert_eq!(b.cwd, Path::new("/repo/w"));
        assert_eq!(
            b.config,
            "name = \"w\"\nmain = \"/repo/w/build/index.js\"\n\n[[durable_objects.bindings]]\nname = \"DB\"\n\
             [triggers]\ncrons = [\"* * * * *\"]\n"
        );
        assert!(custom_build(Path::new("/x"), "name = \"x\"\nmain = \"src/index.ts\"\n").is_none());
    }

    #[test]
    fn a_change_renames_only_the_worker_and_appends_its_binding() {
        let config = "name = \"b\"\nmain = \"x.js\"\n\n[[durable_objects.bindings]]\nname = \"DATABASE\"\n";
        let renamed = ConfigChange { name: Some("b-1".into()), ..ConfigChange::default() }.apply(config);
        assert_eq!(renamed, config.replace("name = \"b\"", "name = \"b-1\""));
        let bound = ConfigChange::bind("BACKEND", "Database", "b-1").apply("name = \"s\"\n");
        assert!(bound.ends_with("class_name = \"Database\"\nscript_name = \"b-1\"\n"), "{bound}");
    }
}
