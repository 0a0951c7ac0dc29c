//! An error and its causes as one line. Many error types already write
//! their source into their own message (`"cannot read {path}: {source}"`),
//! and `anyhow`'s `{:#}` would then print that cause twice; here each cause
//! appears once.

use std::error::Error;

/// `error: cause: cause …`, leaving out a cause whose text the line already
/// holds.
pub fn one_line(error: &(dyn Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapped {
        message: String,
        source: Option<Box<dyn Error + 'static>>,
    }

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.message)
        }
    }

    impl Error for Wrapped {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.source.as_deref()
        }
    }

    fn leaf(message: &str) -> Box<dyn Error + 'static> {
        Box::new(Wrapped {
            message: message.into(),
            source: None,
        })
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let e = Wrapped {
            message: "group plant-7: hub-b did not start: connection timed out".into(),
            source: Some(Box::new(Wrapped {
                message: "hub-b did not start: connection timed out".into(),
                source: Some(leaf("connection timed out")),
            })),
        };
        assert_eq!(
            one_line(&e),
            "group plant-7: hub-b did not start: connection timed out"
        );
    }

    #[test]
    fn a_cause_not_in_the_message_is_appended_in_order() {
        let e = Wrapped {
            message: "starting the fleet".into(),
            source: Some(Box::new(Wrapped {
                message: "group plant-7".into(),
                source: Some(leaf("disk full")),
            })),
        };
        assert_eq!(one_line(&e), "starting the fleet: group plant-7: disk full");
    }
}
