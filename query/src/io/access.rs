//! Which server files a session may read and write, and the one way every
//! statement that names a file opens it: `COPY ... FROM/TO 'path'`, the
//! `read_*` table functions and the embedded loader.
//!
//! A confined session opens each file relative to a descriptor of the
//! allowed directory with `openat2(RESOLVE_BENEATH)`, so the kernel itself
//! refuses any path (symbolic links and `..` included) that would leave it,
//! and a name checked is the file opened: there is no window between a
//! check and an open for a link to be swapped in. Globs and directories are
//! expanded by listing directories opened the same way. Readers then share
//! the opened descriptor ([`InputFile`]); nothing reopens a file by name.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use basalt_formats::files::InputFile;
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::object_store::ObjectStore;
use datafusion::sql::parser::Statement;
use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::sql::error::{Error, Result};

/// Which server-side files a session's statements may read and write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FileAccess {
    /// Any path the process can reach: the embedded default.
    #[default]
    Any,
    /// None: a server started without `--allow-files`.
    Denied,
    /// Only files beneath this directory (made absolute by
    /// [`FileAccess::within`]).
    Within(PathBuf),
}

impl FileAccess {
    /// Files beneath `dir` only. The directory must exist and must not
    /// overlap `data_dir`: a client writing there could replace the
    /// database's own files, and reading there would show them.
    pub fn within(dir: &Path, data_dir: &Path) -> Result<FileAccess> {
        let allowed = dir
            .canonicalize()
            .map_err(|e| dir_error("open directory", dir, &e))?;
        if !allowed.is_dir() {
            return Err(Error::sql(
                "22023",
                format!("\"{}\" is not a directory", dir.display()),
            ));
        }
        if let Ok(data) = data_dir.canonicalize() {
            if data.starts_with(&allowed) || allowed.starts_with(&data) {
                return Err(Error::sql(
                    "22023",
                    format!(
                        "the directory files may be read from and written to ({}) must not overlap the data directory ({})",
                        allowed.display(),
                        data.display()
                    ),
                ));
            }
        }
        Ok(FileAccess::Within(allowed))
    }

    /// The files `sources` name, opened for reading: each source is a
    /// file, a directory (its files, sorted, hidden ones left out) or a
    /// glob pattern (`*`, `?`, `[...]`), taken in the order given.
    pub(crate) fn open_inputs(&self, sources: &[String]) -> Result<Vec<InputFile>> {
        let mut inputs = Vec::new();
        for source in sources {
            let before = inputs.len();
            match self {
                FileAccess::Denied => return Err(denied_outright()),
                FileAccess::Any => open_anywhere(source, &mut inputs)?,
                FileAccess::Within(root) => Beneath::new(root, source)?.open_inputs(&mut inputs)?,
            }
            if inputs.len() == before {
                return Err(Error::sql("58P01", format!("no file matches \"{source}\"")));
            }
        }
        if inputs.is_empty() {
            return Err(Error::sql("22023", "no files to read"));
        }
        Ok(inputs)
    }

    /// Creates (or truncates) `filename` for writing. An existing symbolic
    /// link in its place is refused, never followed.
    pub(crate) fn create_output(&self, filename: &str) -> Result<(File, PathBuf)> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW;
        let (fd, shown) = match self {
            FileAccess::Denied => return Err(denied_outright()),
            FileAccess::Any => {
                let path = PathBuf::from(filename);
                let fd = rustix::fs::open(&path, flags | open_flags(), new_file_mode())
                    .map_err(|e| write_error(&path, &e.into()))?;
                (fd, path)
            }
            FileAccess::Within(root) => {
                let beneath = Beneath::new(root, filename)?;
                if beneath.has_pattern() {
                    return Err(Error::sql(
                        "22023",
                        format!("cannot write to a pattern: \"{filename}\""),
                    ));
                }
                let fd = beneath.open(&beneath.relative, flags)?;
                (fd, PathBuf::from(filename))
            }
        };
        let file = regular_file(fd, &shown, write_error)?;
        Ok((file, shown))
    }
}

/// Refuses DataFusion's own file statements (its `COPY ... TO`, `CREATE
/// EXTERNAL TABLE`, and either under `EXPLAIN`): they would read and write
/// through DataFusion's object stores, past [`FileAccess`]. Basalt's COPY
/// is parsed as Postgres' and runs through `FileAccess`; external tables
/// are not offered.
pub(crate) fn refuse_datafusion_files(statement: &Statement) -> Result<()> {
    match statement {
        Statement::CopyTo(_) => Err(Error::sql(
            "42601",
            "this form of COPY is not supported; write COPY ... TO 'file' or TO STDOUT on its own",
        )),
        Statement::CreateExternalTable(_) => Err(Error::not_supported("CREATE EXTERNAL TABLE")),
        Statement::Explain(explain) => refuse_datafusion_files(&explain.statement),
        Statement::Statement(_) | Statement::Reset(_) => Ok(()),
    }
}

/// The same refusal on a logical plan, wherever in it the statement sits,
/// in case a path to DataFusion's own COPY or external tables is found that
/// does not pass [`refuse_datafusion_files`].
pub(crate) fn refuse_file_plans(plan: &LogicalPlan) -> Result<()> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut refused = None;
    let _ = plan.apply_with_subqueries(|node| {
        refused = match node {
            LogicalPlan::Copy(_) => Some("COPY through DataFusion"),
            LogicalPlan::Ddl(DdlStatement::CreateExternalTable(_)) => Some("CREATE EXTERNAL TABLE"),
            _ => None,
        };
        Ok(if refused.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    match refused {
        Some(what) => Err(Error::not_supported(what)),
        None => Ok(()),
    }
}

/// An object-store registry with no stores at all: DataFusion's default
/// registers the local file system, which would serve any `file://` path
/// a plan named. Basalt's tables and files never go through object stores.
#[derive(Debug, Default)]
pub(crate) struct NoObjectStores;

impl ObjectStoreRegistry for NoObjectStores {
    fn register_store(
        &self,
        _url: &url::Url,
        _store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        None
    }

    fn get_store(&self, url: &url::Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        Err(datafusion::error::DataFusionError::External(Box::new(
            Error::sql(
                "42501",
                format!("no object store serves \"{url}\": files are read only through COPY and read_* functions"),
            ),
        )))
    }
}

/// The flags every open here adds: no descriptor leaks into a child, and
/// opening a FIFO does not wait for a writer (it is refused once open).
fn open_flags() -> OFlags {
    OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY
}

fn new_file_mode() -> Mode {
    Mode::from_raw_mode(0o644)
}

/// openat2 refuses a mode unless the open may create the file.
fn mode_for(flags: OFlags) -> Mode {
    if flags.contains(OFlags::CREATE) {
        new_file_mode()
    } else {
        Mode::empty()
    }
}

/// `fd` as a `File` if it is a regular file, blocking reads again.
fn regular_file(
    fd: OwnedFd,
    shown: &Path,
    error: fn(&Path, &std::io::Error) -> Error,
) -> Result<File> {
    let stat = rustix::fs::fstat(&fd).map_err(|e| error(shown, &e.into()))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(Error::sql(
            "42501",
            format!("\"{}\" is not a regular file", shown.display()),
        ));
    }
    let flags = rustix::fs::fcntl_getfl(&fd).map_err(|e| error(shown, &e.into()))?;
    rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK).map_err(|e| error(shown, &e.into()))?;
    Ok(File::from(fd))
}

fn denied_outright() -> Error {
    Error::sql(
        "42501",
        "reading or writing server files is not allowed on this server; start it with --allow-files DIR",
    )
}

/// Postgres' message for a file that cannot be opened to read.
fn read_error(path: &Path, e: &std::io::Error) -> Error {
    io_error(
        "open file",
        &format!("\"{}\" for reading", path.display()),
        e,
    )
}

/// Postgres' message for a file that cannot be opened to write.
fn write_error(path: &Path, e: &std::io::Error) -> Error {
    io_error(
        "open file",
        &format!("\"{}\" for writing", path.display()),
        e,
    )
}

fn dir_error(doing: &str, path: &Path, e: &std::io::Error) -> Error {
    io_error(doing, &format!("\"{}\"", path.display()), e)
}

/// The Postgres-style message of an I/O error: "could not `doing`
/// `what`: reason".
fn io_error(doing: &str, what: &str, e: &std::io::Error) -> Error {
    let code = match e.kind() {
        std::io::ErrorKind::NotFound => "58P01",
        std::io::ErrorKind::PermissionDenied => "42501",
        std::io::ErrorKind::StorageFull => "53100",
        _ => "58030",
    };
    let text = e.to_string();
    let reason = text
        .find(" (os error")
        .map_or(text.as_str(), |at| &text[..at]);
    Error::sql(code, format!("could not {doing} {what}: {reason}"))
}

fn is_pattern(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

/// Unconfined: the names as the process sees them.
fn open_anywhere(source: &str, inputs: &mut Vec<InputFile>) -> Result<()> {
    let open = |path: PathBuf, inputs: &mut Vec<InputFile>| -> Result<()> {
        let fd = rustix::fs::open(&path, OFlags::RDONLY | open_flags(), Mode::empty())
            .map_err(|e| read_error(&path, &e.into()))?;
        let file = regular_file(fd, &path, read_error)?;
        let input = InputFile::from_file(file, path.clone()).map_err(|e| read_error(&path, &e))?;
        inputs.push(input);
        Ok(())
    };
    if is_pattern(source) && std::fs::symlink_metadata(source).is_err() {
        let matches = glob::glob(source)
            .map_err(|e| Error::sql("22023", format!("invalid pattern \"{source}\": {e}")))?;
        for path in matches.filter_map(std::result::Result::ok) {
            if path.is_file() {
                open(path, inputs)?;
            }
        }
        return Ok(());
    }
    let path = PathBuf::from(source);
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
            .map_err(|e| dir_error("open directory", &path, &e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && !is_hidden(p))
            .collect();
        files.sort();
        for file in files {
            open(file, inputs)?;
        }
        return Ok(());
    }
    open(path, inputs)
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// A name resolved beneath the allowed directory.
struct Beneath<'a> {
    root: &'a Path,
    /// Relative to `root`, without `.` or `..` components.
    relative: PathBuf,
    /// As the client wrote it, for messages.
    given: &'a str,
    root_fd: OwnedFd,
}

impl<'a> Beneath<'a> {
    /// Refuses `..` and absolute names outside `root` before the file
    /// system is asked, so a refusal says nothing about what exists there.
    fn new(root: &'a Path, given: &'a str) -> Result<Beneath<'a>> {
        let denied = || {
            Error::sql(
                "42501",
                format!(
                    "path \"{given}\" is outside the directory the server allows ({})",
                    root.display()
                ),
            )
        };
        let path = Path::new(given);
        let inside = if path.is_absolute() {
            path.strip_prefix(root).map_err(|_| denied())?
        } else {
            path
        };
        let mut relative = PathBuf::new();
        for component in inside.components() {
            match component {
                Component::Normal(part) => relative.push(part),
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(denied())
                }
            }
        }
        let root_fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| dir_error("open directory", root, &e.into()))?;
        Ok(Beneath {
            root,
            relative,
            given,
            root_fd,
        })
    }

    /// Whether the name, taken literally, names something: a file called
    /// `a[1].csv` is that file, not a pattern (and a link by that name
    /// is checked like any other).
    fn names_an_entry(&self) -> bool {
        rustix::fs::statat(
            self.root_fd.as_fd(),
            &self.relative,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .is_ok()
    }

    fn has_pattern(&self) -> bool {
        self.relative.to_str().is_none_or(is_pattern)
    }

    fn outside(&self) -> Error {
        Error::sql(
            "42501",
            format!(
                "path \"{}\" is outside the directory the server allows ({})",
                self.given,
                self.root.display()
            ),
        )
    }

    fn link_refused(&self) -> Error {
        Error::sql(
            "42501",
            format!(
                "path \"{}\" goes through a symbolic link the server does not follow",
                self.given
            ),
        )
    }

    /// Opens `relative` (beneath the root) with `flags`. The kernel refuses
    /// a resolution that leaves the root, through `..` or a link.
    fn open(&self, relative: &Path, flags: OFlags) -> Result<OwnedFd> {
        let shown = self.root.join(relative);
        // An empty path names the root itself.
        let target = if relative.as_os_str().is_empty() {
            Path::new(".")
        } else {
            relative
        };
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        // openat2 refuses O_PATH with flags that only apply to reads.
        let flags = if flags.contains(OFlags::PATH) {
            flags | OFlags::CLOEXEC
        } else {
            flags | open_flags()
        };
        match rustix::fs::openat2(
            self.root_fd.as_fd(),
            target,
            flags,
            mode_for(flags),
            resolve,
        ) {
            Ok(fd) => Ok(fd),
            Err(rustix::io::Errno::XDEV) => Err(self.outside()),
            Err(rustix::io::Errno::LOOP) => Err(self.link_refused()),
            // Kernels before 5.6, or a sandbox that hides openat2.
            Err(rustix::io::Errno::NOSYS) | Err(rustix::io::Errno::PERM) => {
                self.open_without_links(target, flags)
            }
            Err(e) if flags.contains(OFlags::WRONLY) => Err(write_error(&shown, &e.into())),
            Err(e) => Err(read_error(&shown, &e.into())),
        }
    }

    /// Without openat2: one component at a time, refusing every symbolic
    /// link (stricter than the kernel's check, never looser).
    fn open_without_links(&self, relative: &Path, flags: OFlags) -> Result<OwnedFd> {
        let shown = self.root.join(relative);
        let parts: Vec<_> = relative.components().collect();
        let mut dir = rustix::fs::openat(
            self.root_fd.as_fd(),
            ".",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| dir_error("open directory", self.root, &e.into()))?;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let part_flags = if last && flags.contains(OFlags::PATH) {
                flags | OFlags::CLOEXEC | OFlags::NOFOLLOW
            } else if last {
                flags | open_flags() | OFlags::NOFOLLOW
            } else {
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW
            };
            dir = match rustix::fs::openat(
                dir.as_fd(),
                part.as_os_str(),
                part_flags,
                mode_for(part_flags),
            ) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::LOOP) | Err(rustix::io::Errno::NOTDIR) => {
                    return Err(self.link_refused())
                }
                Err(e) if flags.contains(OFlags::WRONLY) => {
                    return Err(write_error(&shown, &e.into()))
                }
                Err(e) => return Err(read_error(&shown, &e.into())),
            };
        }
        Ok(dir)
    }

    /// The file, directory's files or pattern's matches, opened.
    fn open_inputs(&self, inputs: &mut Vec<InputFile>) -> Result<()> {
        if self.has_pattern() && !self.names_an_entry() {
            let mut matches = Vec::new();
            self.expand(
                PathBuf::new(),
                &self.relative.components().collect::<Vec<_>>(),
                &mut matches,
            )?;
            matches.sort();
            for relative in matches {
                let fd = self.open(&relative, OFlags::RDONLY)?;
                if let Some(input) = self.input(fd, &relative, false)? {
                    inputs.push(input);
                }
            }
            return Ok(());
        }
        let fd = self.open(&self.relative, OFlags::RDONLY)?;
        let stat = rustix::fs::fstat(&fd)
            .map_err(|e| read_error(&self.root.join(&self.relative), &e.into()))?;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Directory {
            let mut names = self.list(&fd, &self.relative)?;
            names.retain(|name| !name.starts_with('.'));
            names.sort();
            for name in names {
                let relative = self.relative.join(&name);
                let fd = self.open(&relative, OFlags::RDONLY)?;
                if let Some(input) = self.input(fd, &relative, false)? {
                    inputs.push(input);
                }
            }
            return Ok(());
        }
        if let Some(input) = self.input(fd, &self.relative, true)? {
            inputs.push(input);
        }
        Ok(())
    }

    /// An opened file as an input; a directory or device is skipped
    /// while expanding, and refused when named alone.
    fn input(&self, fd: OwnedFd, relative: &Path, named: bool) -> Result<Option<InputFile>> {
        let shown = self.root.join(relative);
        let stat = rustix::fs::fstat(&fd).map_err(|e| read_error(&shown, &e.into()))?;
        if !named
            && rustix::fs::FileType::from_raw_mode(stat.st_mode)
                != rustix::fs::FileType::RegularFile
        {
            return Ok(None);
        }
        let file = regular_file(fd, &shown, read_error)?;
        InputFile::from_file(file, shown.clone())
            .map(Some)
            .map_err(|e| read_error(&shown, &e))
    }

    /// The entry names of the directory `fd` (opened beneath the root).
    fn list(&self, fd: &OwnedFd, relative: &Path) -> Result<Vec<String>> {
        let shown = self.root.join(relative);
        let readable = rustix::fs::openat(
            fd.as_fd(),
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| dir_error("open directory", &shown, &e.into()))?;
        let dir = rustix::fs::Dir::new(readable)
            .map_err(|e| dir_error("open directory", &shown, &e.into()))?;
        let mut names = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| dir_error("read directory", &shown, &e.into()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Every path beneath `prefix` matching the remaining `parts`, each a
    /// literal name or a glob pattern of one component.
    fn expand(&self, prefix: PathBuf, parts: &[Component], out: &mut Vec<PathBuf>) -> Result<()> {
        let Some((part, rest)) = parts.split_first() else {
            out.push(prefix);
            return Ok(());
        };
        let text = part.as_os_str().to_string_lossy();
        if !is_pattern(&text) {
            return self.expand(prefix.join(part.as_os_str()), rest, out);
        }
        let pattern = glob::Pattern::new(&text)
            .map_err(|e| Error::sql("22023", format!("invalid pattern \"{}\": {e}", self.given)))?;
        let dir = match self.open(&prefix, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(dir) => dir,
            // A literal part of the pattern that is not a directory matches nothing.
            Err(e) if matches!(e.sqlstate(), "58P01" | "58030") => return Ok(()),
            Err(e) => return Err(e),
        };
        for name in self.list(&dir, &prefix)? {
            if pattern.matches(&name) {
                self.expand(prefix.join(&name), rest, out)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    fn read(input: &InputFile) -> String {
        let mut text = String::new();
        input.reader().read_to_string(&mut text).unwrap();
        text
    }

    struct Dirs {
        _tmp: tempfile::TempDir,
        allowed: PathBuf,
        outside: PathBuf,
    }

    fn dirs() -> Dirs {
        let tmp = tempfile::tempdir().unwrap();
        let allowed = tmp.path().join("allowed");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(allowed.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.csv"), "secret\n").unwrap();
        std::fs::write(allowed.join("a.csv"), "a\n").unwrap();
        std::fs::write(allowed.join("sub/b.csv"), "b\n").unwrap();
        Dirs {
            allowed: allowed.canonicalize().unwrap(),
            outside: outside.canonicalize().unwrap(),
            _tmp: tmp,
        }
    }

    fn within(d: &Dirs) -> FileAccess {
        FileAccess::Within(d.allowed.clone())
    }

    #[test]
    fn files_inside_open_and_patterns_expand_beneath_the_root() {
        let d = dirs();
        let access = within(&d);
        let one = access.open_inputs(&["a.csv".into()]).unwrap();
        assert_eq!(read(&one[0]), "a\n");
        let absolute = d.allowed.join("sub/b.csv").display().to_string();
        assert_eq!(read(&access.open_inputs(&[absolute]).unwrap()[0]), "b\n");
        let all: Vec<String> = access
            .open_inputs(&["*/*.csv".into(), "sub".into()])
            .unwrap()
            .iter()
            .map(read)
            .collect();
        assert_eq!(all, ["b\n", "b\n"]);
    }

    #[test]
    fn links_and_parent_components_leaving_the_root_are_refused() {
        let d = dirs();
        let access = within(&d);
        symlink(d.outside.join("secret.csv"), d.allowed.join("link.csv")).unwrap();
        symlink(d.outside.join("secret.csv"), d.allowed.join("a[1].csv")).unwrap();
        symlink(&d.outside, d.allowed.join("out")).unwrap();
        for name in [
            "link.csv",
            "a[1].csv",
            "out/secret.csv",
            "../outside/secret.csv",
            "out",
        ] {
            let err = access.open_inputs(&[name.into()]).unwrap_err();
            assert_eq!(err.sqlstate(), "42501", "{name}: {err}");
        }
        // A pattern that matches the escaping link opens nothing outside.
        let err = access.open_inputs(&["a*.csv".into()]).unwrap_err();
        assert_eq!(err.sqlstate(), "42501", "{err}");
        let err = access.open_inputs(&["out/*".into()]).unwrap_err();
        assert_eq!(err.sqlstate(), "42501", "{err}");
        let outside = d.outside.join("secret.csv").display().to_string();
        assert_eq!(
            access.open_inputs(&[outside]).unwrap_err().sqlstate(),
            "42501"
        );
    }

    #[test]
    fn writes_never_follow_a_link_even_a_dangling_one() {
        let d = dirs();
        let access = within(&d);
        let target = d.outside.join("new.csv");
        symlink(&target, d.allowed.join("dangling.csv")).unwrap();
        let err = access.create_output("dangling.csv").unwrap_err();
        assert_eq!(err.sqlstate(), "42501", "{err}");
        assert!(!target.exists());
        symlink(&d.outside, d.allowed.join("out")).unwrap();
        let err = access.create_output("out/new.csv").unwrap_err();
        assert_eq!(err.sqlstate(), "42501", "{err}");
        assert!(!target.exists());
        let (mut file, _) = access.create_output("sub/written.csv").unwrap();
        std::io::Write::write_all(&mut file, b"x").unwrap();
        assert_eq!(
            std::fs::read(d.allowed.join("sub/written.csv")).unwrap(),
            b"x"
        );
    }

    #[test]
    fn the_fallback_without_openat2_refuses_every_link() {
        let d = dirs();
        symlink(d.allowed.join("a.csv"), d.allowed.join("inside.csv")).unwrap();
        let beneath = Beneath::new(&d.allowed, "inside.csv").unwrap();
        let err = beneath
            .open_without_links(Path::new("inside.csv"), OFlags::RDONLY)
            .unwrap_err();
        assert_eq!(err.sqlstate(), "42501");
        let fd = beneath
            .open_without_links(Path::new("sub/b.csv"), OFlags::RDONLY)
            .unwrap();
        let mut text = String::new();
        File::from(fd).read_to_string(&mut text).unwrap();
        assert_eq!(text, "b\n");
    }

    #[test]
    fn fifos_and_devices_are_refused_without_blocking() {
        let d = dirs();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            d.allowed.join("pipe.csv"),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let err = within(&d).open_inputs(&["pipe.csv".into()]).unwrap_err();
        assert_eq!(err.sqlstate(), "42501", "{err}");
        let err = FileAccess::Any
            .open_inputs(&["/dev/zero".into()])
            .unwrap_err();
        assert_eq!(err.sqlstate(), "42501", "{err}");
    }

    #[test]
    fn an_allowed_directory_may_not_overlap_the_data_directory() {
        let d = dirs();
        let data = d.allowed.join("db");
        std::fs::create_dir(&data).unwrap();
        assert!(FileAccess::within(&d.allowed, &data).is_err());
        assert!(FileAccess::within(&data, &d.allowed).is_err());
        assert_eq!(
            FileAccess::within(&d.allowed, &d.outside).unwrap(),
            FileAccess::Within(d.allowed.clone())
        );
    }
}
