//! Reading rule sets from disk: files and folders to roots, includes followed (each file read
//! once, cycles reported), and `import rewrites` CSV rows turned into rewrite items whose spans
//! point at the row, so a bad row is reported where it is.

use crate::ast::{BrokenItem, File, Item, Rewrite, Text};
use crate::diagnostic::{Code, Diagnostic};
use crate::parse::parse_file;
use crate::parse::screen::screen;
use crate::source::{FileId, SourceMap, Span};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Why the files named on the command line could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A path does not exist or cannot be read.
    #[error("cannot read `{path}`: {reason}")]
    Unreadable {
        /// The path.
        path: PathBuf,
        /// The OS's reason.
        reason: String,
    },
    /// A folder holds no rule files.
    #[error("`{0}` contains no .mailflow files")]
    NoRuleFiles(PathBuf),
}

/// The items of one rule set, from its root file and everything it includes.
#[derive(Debug)]
pub struct LoadedRuleSet {
    /// The root file.
    pub root: PathBuf,
    /// Items in include order.
    pub items: Vec<Item>,
    /// Items that did not parse.
    pub broken: Vec<BrokenItem>,
    /// Files already gathered (so a file included twice counts once).
    files: HashSet<PathBuf>,
    /// The folder its includes and imports must stay in (canonical): the folder named on the
    /// command line, or the root file's folder.
    tree: PathBuf,
}

/// Everything read for one run.
#[derive(Debug, Default)]
pub struct Workspace {
    /// Every file read.
    pub sources: SourceMap,
    /// The rule sets found.
    pub rule_sets: Vec<LoadedRuleSet>,
    /// Problems found while reading (syntax, includes, CSV).
    pub diagnostics: Vec<Diagnostic>,
    parsed: HashMap<PathBuf, (FileId, File)>,
    /// Texts to use instead of what is on disk, by canonical path (an editor's unsaved buffers).
    overlays: HashMap<PathBuf, String>,
    /// Folders outside a rule set's tree that includes and imports may read too
    /// (`--allow-path`), canonical.
    allowed: Vec<PathBuf>,
}

/// The extension of rule files.
pub const EXTENSION: &str = "mailflow";

pub use crate::input::{FILE_SIZE_LIMIT, read_limited, read_limited_string};

/// Overlays keyed as `parse_path` looks them up.
fn by_canonical_path(overlays: HashMap<PathBuf, String>) -> HashMap<PathBuf, String> {
    overlays
        .into_iter()
        .map(|(p, text)| (canonical(&p), text))
        .collect()
}

/// Why a rule file found in a folder, or named on the command line, is not read.
const LINK_OUT: &str =
    "it is a link to a file outside its folder; allow the target's folder with `--allow-path DIR`";

/// The folder a file is in, canonical (`a.mailflow` is in the current folder).
fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => canonical(p),
        _ => canonical(Path::new(".")),
    }
}

impl Workspace {
    /// Loads every rule set named by `paths`: a file is a rule set; in a folder, every
    /// `.mailflow` file (recursively) that no other file there includes is one.
    pub fn load(paths: &[PathBuf]) -> Result<Workspace, LoadError> {
        Workspace::load_allowing(paths, HashMap::new(), &[])
    }

    /// [`Workspace::load`], reading the rule files named in `overlays` (keys are paths as
    /// given or canonical) from there instead of from disk.
    pub fn load_with(
        paths: &[PathBuf],
        overlays: HashMap<PathBuf, String>,
    ) -> Result<Workspace, LoadError> {
        Workspace::load_allowing(paths, overlays, &[])
    }

    /// [`Workspace::load_with`], letting includes and imports read inside the folders `allow`
    /// as well as inside each rule set's own folder tree.
    pub fn load_allowing(
        paths: &[PathBuf],
        overlays: HashMap<PathBuf, String>,
        allow: &[PathBuf],
    ) -> Result<Workspace, LoadError> {
        let mut ws = Workspace {
            overlays: by_canonical_path(overlays),
            allowed: allow.iter().map(|p| canonical(p)).collect(),
            ..Workspace::default()
        };
        let mut roots = Vec::new();
        for path in paths {
            let unreadable = |path: &Path, reason: String| LoadError::Unreadable {
                path: path.to_path_buf(),
                reason,
            };
            let md = std::fs::metadata(path)
                .map_err(|e| unreadable(path, crate::resolve::io_reason(&e)))?;
            if md.is_dir() {
                let tree = canonical(path);
                let mut files = Vec::new();
                collect_rule_files(path, &mut files)
                    .map_err(|e| unreadable(path, crate::resolve::io_reason(&e)))?;
                if files.is_empty() {
                    return Err(LoadError::NoRuleFiles(path.clone()));
                }
                files.sort();
                let mut included = HashSet::new();
                for f in &files {
                    // A link in the folder to a file outside it is an include in disguise.
                    if ws.outside(&tree, f).is_some() {
                        return Err(unreadable(f, LINK_OUT.to_string()));
                    }
                    ws.parse_path(f)
                        .map_err(|e| unreadable(f, crate::resolve::io_reason(&e)))?;
                    for inc in ws.includes_of(f) {
                        included.insert(canonical(&inc));
                    }
                }
                roots.extend(
                    files
                        .into_iter()
                        .filter(|f| !included.contains(&canonical(f)))
                        .map(|f| (f, tree.clone())),
                );
            } else {
                // So is a root file that is a link out of its folder (`rules/main.mailflow`
                // pointing at `/etc/passwd` in a pull request checked by CI).
                let tree = folder_of(path);
                if ws.outside(&tree, path).is_some() {
                    return Err(unreadable(path, LINK_OUT.to_string()));
                }
                ws.parse_path(path)
                    .map_err(|e| unreadable(path, crate::resolve::io_reason(&e)))?;
                roots.push((path.clone(), tree));
            }
        }
        for (root, tree) in roots {
            let mut set = LoadedRuleSet {
                root: root.clone(),
                items: Vec::new(),
                broken: Vec::new(),
                files: HashSet::new(),
                tree,
            };
            let mut stack = Vec::new();
            ws.gather(&root, &mut stack, &mut set);
            ws.rule_sets.push(set);
        }
        Ok(ws)
    }

    /// Loads one in-memory text as a rule set (includes resolve against the current folder).
    pub fn from_text(name: &str, text: &str) -> Workspace {
        Workspace::from_text_with(name, text, HashMap::new())
    }

    /// [`Workspace::from_text`], reading the files it includes from `overlays` when named
    /// there (an editor's other unsaved buffers).
    pub fn from_text_with(name: &str, text: &str, overlays: HashMap<PathBuf, String>) -> Workspace {
        let mut ws = Workspace {
            overlays: by_canonical_path(overlays),
            ..Workspace::default()
        };
        let path = PathBuf::from(name);
        let id = ws.sources.add(path.clone(), text.to_string());
        ws.diagnostics.extend(screen(id, text));
        let (file, diags) = parse_file(id, text);
        ws.diagnostics.extend(diags);
        ws.parsed.insert(canonical(&path), (id, file));
        let mut set = LoadedRuleSet {
            root: path.clone(),
            items: Vec::new(),
            broken: Vec::new(),
            files: HashSet::new(),
            tree: folder_of(&path),
        };
        ws.gather(&path, &mut Vec::new(), &mut set);
        ws.rule_sets.push(set);
        ws
    }

    /// Why `target` may not be read for a rule set whose tree is `tree`: it is (or leads,
    /// through a link or `..`) outside that folder and every allowed one. Decided on the
    /// canonical path, before the file is opened.
    fn outside(&self, tree: &Path, target: &Path) -> Option<String> {
        let real = match std::fs::canonicalize(target) {
            Ok(p) => p,
            // Nothing there: reading it fails with its own reason, and reveals nothing.
            Err(_) => return None,
        };
        if real.starts_with(tree) || self.allowed.iter().any(|a| real.starts_with(a)) {
            return None;
        }
        // Neither folder is named: the message stays the same wherever the rule set lies.
        Some(if target.is_absolute() {
            "an absolute path outside this rule set's folder".to_string()
        } else {
            "this path leads outside this rule set's folder".to_string()
        })
    }

    /// Reads and parses a file once; later calls are free.
    fn parse_path(&mut self, path: &Path) -> std::io::Result<FileId> {
        let key = canonical(path);
        if let Some((id, _)) = self.parsed.get(&key) {
            return Ok(*id);
        }
        let text = match self.overlays.get(&key) {
            Some(text) => text.clone(),
            None => read_limited_string(path)?,
        };
        let id = self.sources.add(path.to_path_buf(), text);
        let text = self.sources.get(id).map(|f| f.text.as_str()).unwrap_or("");
        self.diagnostics.extend(screen(id, text));
        let (file, diags) = parse_file(id, text);
        self.diagnostics.extend(diags);
        self.parsed.insert(key, (id, file));
        Ok(id)
    }

    fn includes_of(&self, path: &Path) -> Vec<PathBuf> {
        let Some((_, file)) = self.parsed.get(&canonical(path)) else {
            return Vec::new();
        };
        let base = path.parent().unwrap_or(Path::new(""));
        file.items
            .iter()
            .filter_map(|i| match i {
                Item::Include(t) => Some(base.join(&t.value)),
                _ => None,
            })
            .collect()
    }

    /// Appends the items of `path` (and, in place, of what it includes) to `set`.
    fn gather(&mut self, path: &Path, stack: &mut Vec<PathBuf>, set: &mut LoadedRuleSet) {
        let key = canonical(path);
        stack.push(key.clone());
        let Some((_, file)) = self.parsed.get(&key) else {
            stack.pop();
            return;
        };
        let items = file.items.clone();
        set.broken.extend(file.broken.iter().cloned());
        let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
        for item in items {
            match &item {
                Item::Include(t) => {
                    let target = base.join(&t.value);
                    if let Some(reason) = self.outside(&set.tree, &target) {
                        self.outside_tree(t, &reason);
                        continue;
                    }
                    let tkey = canonical(&target);
                    if stack.contains(&tkey) {
                        self.diagnostics.push(
                            Diagnostic::new(Code::E003, format!("`{}` includes itself", t.value))
                                .primary(t.span, "this include leads back to a file being read")
                                .help("move shared definitions into a file that both include"),
                        );
                        continue;
                    }
                    if set.files.contains(&tkey) {
                        // Already part of this rule set through another include.
                        continue;
                    }
                    match self.parse_path(&target) {
                        Ok(_) => {
                            set.files.insert(tkey);
                            self.gather(&target, stack, set);
                        }
                        Err(e) => self.unreadable(t, &target, &e),
                    }
                }
                Item::ImportRewrites(t) => {
                    let target = base.join(&t.value);
                    if let Some(reason) = self.outside(&set.tree, &target) {
                        self.outside_tree(t, &reason);
                        continue;
                    }
                    match read_limited_string(&target) {
                        Ok(text) => {
                            let id = self.sources.add(target.clone(), text);
                            let text = self
                                .sources
                                .get(id)
                                .map(|f| f.text.clone())
                                .unwrap_or_default();
                            self.diagnostics.extend(screen(id, &text));
                            let (rows, diags) = csv_rewrites(id, &text);
                            self.diagnostics.extend(diags);
                            set.items.extend(rows.into_iter().map(Item::Rewrite));
                        }
                        Err(e) => self.unreadable(t, &target, &e),
                    }
                }
                Item::Test(t) => {
                    // A test's message file is read when the test runs, and rules can
                    // report what it holds (a `matches` per character, answered by which
                    // rules fired): it stays in the folder as includes do.
                    let files = t.settings.iter().filter(|s| s.name.value == "message");
                    for m in files.flat_map(|s| s.groups.iter().flatten()) {
                        if let Some(reason) = self.outside(&set.tree, &base.join(&m.value)) {
                            self.outside_tree(m, &reason);
                        }
                    }
                    set.items.push(item);
                }
                _ => set.items.push(item),
            }
        }
        stack.pop();
    }

    fn outside_tree(&mut self, t: &Text, reason: &str) {
        self.diagnostics.push(
            Diagnostic::new(
                Code::E005,
                format!("`{}` is outside the rule set's folder", t.value),
            )
            .primary(t.span, format!("{reason}; it is not read"))
            .help(
                "includes, imports and test messages stay in the folder of the rule set (the folder named on the command line, or the root file's folder); move the file there, or allow its folder with `--allow-path DIR`",
            ),
        );
    }

    fn unreadable(&mut self, t: &Text, path: &Path, e: &std::io::Error) {
        let reason = crate::resolve::io_reason(e);
        // Bytes that are not text are reported by what they are, never by what they hold.
        let code = if e.kind() == std::io::ErrorKind::InvalidData {
            Code::E007
        } else {
            Code::E002
        };
        let message = if code == Code::E007 {
            format!("`{}` is not rule text", t.value)
        } else {
            format!("cannot read `{}`", t.value)
        };
        self.diagnostics.push(
            Diagnostic::new(code, message)
                .primary(t.span, format!("`{}`: {reason}", path.display()))
                .help(if code == Code::E007 {
                    "name a UTF-8 text file here; its contents are not shown"
                } else {
                    "paths are relative to the folder of the file that names them; only regular files are read"
                }),
        );
    }
}

/// A path as the loader keys files: canonical when it exists, else as given.
pub fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Every `.mailflow` file under `dir` (recursively), sorted.
pub fn rule_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    collect_rule_files(dir, &mut files)?;
    files.sort();
    Ok(files)
}

/// [`rule_files`], or the first of them that is a link to a file outside `dir`, with why it
/// is not read (what `check` refuses too).
pub fn confined_rule_files(dir: &Path) -> Result<Vec<PathBuf>, (PathBuf, String)> {
    let files = rule_files(dir).map_err(|e| (dir.to_path_buf(), crate::resolve::io_reason(&e)))?;
    let tree = canonical(dir);
    match files.iter().find(|f| !canonical(f).starts_with(&tree)) {
        Some(f) => Err((f.clone(), LINK_OUT.to_string())),
        None => Ok(files),
    }
}

/// Whether a file named on its own is a link out of its folder (`rules/main.mailflow`
/// pointing at a file elsewhere).
pub fn links_out_of_its_folder(path: &Path) -> bool {
    std::fs::canonicalize(path).is_ok_and(|real| !real.starts_with(folder_of(path)))
}

fn collect_rule_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    collect_rule_files_once(dir, out, &mut HashSet::new())
}

/// Each folder is walked once, by its real path: a link to a folder above (`up -> ..`) or to
/// itself would otherwise be walked forever.
fn collect_rule_files_once(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    seen: &mut HashSet<PathBuf>,
) -> std::io::Result<()> {
    if !seen.insert(canonical(dir)) {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_rule_files_once(&path, out, seen)?;
        } else if path.extension().is_some_and(|e| e == EXTENSION) {
            out.push(path);
        }
    }
    Ok(())
}

/// Parses Exchange's address rewrite CSV
/// (`Name,InternalAddress,ExternalAddress,ExceptionList,OutboundOnly`) into rewrite items.
pub fn csv_rewrites(file: FileId, text: &str) -> (Vec<Rewrite>, Vec<Diagnostic>) {
    let mut out = Vec::new();
    let mut diags = Vec::new();
    let header_end = text.find('\n').unwrap_or(text.len());
    let header_span = Span::new(file, 0, header_end);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            diags.push(
                Diagnostic::new(Code::E004, "the csv header cannot be read")
                    .primary(header_span, e.to_string())
                    .help("the first line must be `Name,InternalAddress,ExternalAddress,ExceptionList,OutboundOnly`"),
            );
            return (out, diags);
        }
    };
    let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(internal_col), Some(external_col)) = (col("InternalAddress"), col("ExternalAddress"))
    else {
        diags.push(
            Diagnostic::new(Code::E004, "the csv header lacks `InternalAddress` or `ExternalAddress`")
                .primary(header_span, "this header")
                .help("the first line must be `Name,InternalAddress,ExternalAddress,ExceptionList,OutboundOnly`"),
        );
        return (out, diags);
    };
    let name_col = col("Name");
    let exc_col = col("ExceptionList");
    let out_col = col("OutboundOnly");
    let mut record = csv::StringRecord::new();
    // Line numbers are counted as the reader moves on: counting from the start for every row
    // made a 100,000-row import quadratic.
    let (mut counted_to, mut newlines) = (0usize, 0usize);
    loop {
        let result = reader.read_record(&mut record);
        let end = reader.position().byte() as usize;
        // The record's own position, without the line ending that precedes it.
        let raw_start = record.position().map_or(end, |p| p.byte() as usize);
        let start = raw_start
            + text
                .get(raw_start..end)
                .map_or(0, |t| t.len() - t.trim_start_matches(['\r', '\n']).len());
        let row_text = text.get(start..end).unwrap_or("").trim_end();
        let row_span = Span::new(file, start, start + row_text.len());
        if start > counted_to {
            newlines += text
                .get(counted_to..start)
                .map_or(0, |t| t.matches('\n').count());
            counted_to = start;
        }
        let line = newlines + 1;
        match result {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                diags.push(
                    Diagnostic::new(
                        Code::E004,
                        format!("line {line} of the csv file does not parse"),
                    )
                    .primary(row_span, e.to_string())
                    .help("check the quotes and commas of this row"),
                );
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    break;
                }
                continue;
            }
        }
        if record.iter().all(str::is_empty) {
            continue;
        }
        if record.len() < headers.len() {
            diags.push(
                Diagnostic::new(
                    Code::E004,
                    format!(
                        "line {line} has {} fields but the header has {}",
                        record.len(),
                        headers.len()
                    ),
                )
                .primary(row_span, "fields are missing here")
                .help(
                    "give every column, leaving unused ones empty: `Name,a@x.com,b@y.com,,False`",
                ),
            );
            continue;
        }
        // Field spans: find each field's text in the row, left to right.
        let mut cursor = 0;
        let mut field = |i: Option<usize>| -> Option<Text> {
            let v = record.get(i?)?.to_string();
            let rel = row_text
                .get(cursor..)
                .and_then(|r| r.find(&v))
                .map(|p| p + cursor);
            let span = match rel {
                Some(p) if !v.is_empty() => {
                    cursor = p + v.len();
                    Span::new(file, start + p, start + p + v.len())
                }
                _ => row_span,
            };
            Some(Text {
                value: v,
                span,
                quoted: false,
            })
        };
        let name = field(name_col).filter(|t| !t.value.is_empty());
        let internal = field(Some(internal_col));
        let external = field(Some(external_col));
        let exceptions = field(exc_col);
        let outbound = field(out_col);
        let (Some(internal), Some(external)) = (internal, external) else {
            continue;
        };
        let outbound_only = match outbound.as_ref().map(|t| t.value.to_ascii_lowercase()) {
            None => None,
            Some(v) if v.is_empty() || v == "false" || v == "$false" => None,
            Some(v) if v == "true" || v == "$true" => outbound.as_ref().map(|t| t.span),
            Some(_) => {
                let t = outbound.as_ref().map_or(row_span, |t| t.span);
                diags.push(
                    Diagnostic::new(
                        Code::E004,
                        format!("line {line}: `OutboundOnly` must be `True` or `False`"),
                    )
                    .primary(t, "not a boolean")
                    .help("write `True` or `False`, or leave it empty for `False`"),
                );
                continue;
            }
        };
        let exceptions = exceptions
            .map(|t| {
                t.value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Text {
                        value: s.to_string(),
                        span: t.span,
                        quoted: false,
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Rewrite {
            name,
            internal,
            external,
            outbound_only,
            exceptions,
            span: row_span,
        });
    }
    (out, diags)
}
