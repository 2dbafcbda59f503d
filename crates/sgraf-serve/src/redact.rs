//! Messages without server paths: the folder becomes relative names, a
//! model's folder its name, and any other absolute path `<path>`.

use std::path::Path;

/// Rewrites the server's paths out of messages sent to clients.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// (path, what replaces it), longest path first.
    known: Vec<(String, String)>,
}

impl Redactor {
    /// Files of `folder` become their names inside it.
    pub fn new(folder: &Path) -> Self {
        let mut r = Self::default();
        r.add_folder(folder);
        r
    }

    fn variants(path: &Path) -> Vec<String> {
        let mut out = vec![path.display().to_string()];
        if let Ok(abs) = std::path::absolute(path) {
            out.push(abs.display().to_string());
        }
        if let Ok(real) = path.canonicalize() {
            out.push(real.display().to_string());
        }
        out.retain(|p| p.len() > 1);
        out.sort();
        out.dedup();
        out
    }

    fn add_folder(&mut self, folder: &Path) {
        for p in Self::variants(folder) {
            self.known.push((format!("{p}/"), String::new()));
            self.known.push((p, ".".to_string()));
        }
        self.sort();
    }

    /// `path` (a model's folder, say) becomes `name`.
    pub fn add(&mut self, path: &Path, name: &str) {
        for p in Self::variants(path) {
            self.known.push((p, name.to_string()));
        }
        self.sort();
    }

    fn sort(&mut self) {
        self.known
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        self.known.dedup_by(|a, b| a.0 == b.0);
    }

    /// `msg` with the known paths replaced, then any other absolute path.
    pub fn clean(&self, msg: &str) -> String {
        let mut s = msg.to_string();
        for (path, name) in &self.known {
            if s.contains(path.as_str()) {
                s = s.replace(path.as_str(), name);
            }
        }
        redact_absolute(&s)
    }
}

/// Every absolute path (a `/` at the start of the message or after a space,
/// quote, bracket, `=` or `,`, up to the next space, quote or bracket)
/// becomes `<path>`.
pub fn redact_absolute(msg: &str) -> String {
    const BEFORE: &[char] = &[' ', '\t', '\n', '"', '\'', '(', '[', '{', '=', ',', '`'];
    const END: &[char] = &[' ', '\t', '\n', '"', '\'', ')', ']', '}', ',', '`'];
    let mut out = String::with_capacity(msg.len());
    let chars: Vec<char> = msg.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let starts = c == '/'
            && (i == 0 || BEFORE.contains(&chars[i - 1]))
            && chars.get(i + 1).is_some_and(|n| !n.is_whitespace());
        if starts {
            let mut j = i + 1;
            while j < chars.len() && !END.contains(&chars[j]) {
                // `path: reason` ends the path at the colon.
                if chars[j] == ':' && chars.get(j + 1).is_none_or(|n| n.is_whitespace()) {
                    break;
                }
                j += 1;
            }
            out.push_str("<path>");
            i = j;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_and_models_and_other_paths_go() {
        let dir = std::env::temp_dir().join(format!("sgraf-redact-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("models/sgr")).unwrap();
        let mut r = Redactor::new(&dir);
        r.add(&dir.join("models/sgr"), "sgr");
        let d = dir.display();
        assert_eq!(
            r.clean(&format!("{d}/sub/a.npy: bad shape [3]")),
            "sub/a.npy: bad shape [3]"
        );
        assert_eq!(
            r.clean(&format!("loading the model {d}/models/sgr: no config")),
            "loading the model sgr: no config"
        );
        assert_eq!(r.clean(&format!("{d} holds nothing")), ". holds nothing");
        assert_eq!(
            r.clean("reading /etc/passwd: denied (\"/var/x y\")"),
            "reading <path>: denied (\"<path> y\")"
        );
        assert_eq!(
            r.clean("no image \"a/b.png\" 1/2"),
            "no image \"a/b.png\" 1/2"
        );
        assert_eq!(redact_absolute("/"), "/");
        assert_eq!(redact_absolute("x=/a/b,y"), "x=<path>,y");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
