//! Where `EGRESS_DESTINATION` comes from: the variable, or a file that replaces it (a
//! ConfigMap key mounted as a volume). [`ConfigSource::load`] is the one place that reads
//! it: at start and on every reload, once each, so what is validated is what is applied,
//! and the agent compares later reads with exactly what it started from.

use std::path::{Path, PathBuf};

use crate::config::error::ConfigError;

/// The variable's value and the file that overrides it.
#[derive(Clone, Debug, Default)]
pub struct ConfigSource {
    variable: Option<String>,
    file: Option<PathBuf>,
}

impl ConfigSource {
    #[must_use]
    pub fn new(variable: Option<String>, file: Option<PathBuf>) -> Self {
        Self { variable, file }
    }

    /// The file, if the value comes from one.
    #[must_use]
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The value: the file's content when there is a file (read once, following a
    /// ConfigMap's symlinks), else the variable.
    pub fn load(&self) -> Result<Option<String>, ConfigError> {
        match &self.file {
            Some(path) => {
                std::fs::read_to_string(path)
                    .map(Some)
                    .map_err(|err| ConfigError::ConfigFile {
                        path: path.display().to_string(),
                        source: std::sync::Arc::new(err),
                    })
            }
            None => Ok(self.variable.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_replaces_the_variable_and_is_read_at_each_load() {
        let dir = std::env::temp_dir().join(format!("egress-source-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("destination");
        std::fs::write(&path, "80 tcp 203.0.113.10\n").unwrap();
        let source = ConfigSource::new(Some("81 tcp 203.0.113.11".into()), Some(path.clone()));
        assert_eq!(
            source.load().unwrap().as_deref(),
            Some("80 tcp 203.0.113.10\n")
        );
        std::fs::write(&path, "82 tcp 203.0.113.12\n").unwrap();
        assert_eq!(
            source.load().unwrap().as_deref(),
            Some("82 tcp 203.0.113.12\n")
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let err = source.load().unwrap_err().to_string();
        assert!(err.starts_with("reading --config-file "), "{err}");
        let variable = ConfigSource::new(Some("81 tcp 203.0.113.11".into()), None);
        assert_eq!(
            variable.load().unwrap().as_deref(),
            Some("81 tcp 203.0.113.11")
        );
    }
}
