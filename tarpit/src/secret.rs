//! Secrets (API keys, passwords) read from the environment or `.env`, and kept out of logs.
//!
//! Secrets never come from the configuration file: that file is printed by `check-config`,
//! committed to repositories and copied between sensors.

/// A secret value. `Debug` prints a mask, so it cannot reach a log line by accident.
#[derive(Clone)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<masked>)")
    }
}

impl Secret {
    /// The variable `name` from the environment, else from `.env` in the working directory;
    /// `None` when it is unset or blank. Only this one variable is taken from `.env`: nothing
    /// else there leaks into the process.
    pub fn from_env(name: &str) -> Option<Self> {
        if let Ok(value) = std::env::var(name)
            && !value.trim().is_empty()
        {
            return Some(Self(value.trim().to_owned()));
        }
        dotenvy::from_filename_iter(".env")
            .ok()?
            .filter_map(Result::ok)
            .find(|(key, value)| key == name && !value.trim().is_empty())
            .map(|(_, value)| Self(value.trim().to_owned()))
    }

    /// A secret with a known value, for tests.
    #[cfg(test)]
    pub fn for_test(value: &str) -> Self {
        Self(value.to_owned())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_masks_the_value() {
        let secret = Secret::for_test("hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert_eq!(secret.expose(), "hunter2");
    }
}
