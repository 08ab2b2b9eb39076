//! How jobs are isolated (plain process, bubblewrap sandbox, Kubernetes Pod) and, from that,
//! whose listings the agent may serve. Decisions are pure functions; the probe is the only I/O.

use aitbc_protocol::tx::Serves;
use aitbc_protocol::Address;
use std::path::Path;
use std::process::{Command, Stdio};

/// Where a job's code runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsolationMode {
    /// A child process of the agent, as the agent's user: only for the owner's own listings.
    Process,
    /// A bubblewrap sandbox: own user, mount, PID and network namespaces.
    Sandbox,
    /// A Kubernetes Pod bound to the agent's node.
    Pod,
}

impl IsolationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IsolationMode::Process => "process",
            IsolationMode::Sandbox => "sandbox",
            IsolationMode::Pod => "pod",
        }
    }
    /// Whether code from other providers may run under this mode.
    pub fn isolates(self) -> bool {
        self != IsolationMode::Process
    }
}

/// `--isolation`: a mode, or `auto` (the sandbox where it works, else plain processes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsolationRequest {
    Auto,
    Exactly(IsolationMode),
}

impl std::str::FromStr for IsolationRequest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "auto" => Ok(IsolationRequest::Auto),
            "process" => Ok(IsolationRequest::Exactly(IsolationMode::Process)),
            "sandbox" => Ok(IsolationRequest::Exactly(IsolationMode::Sandbox)),
            "pod" => Ok(IsolationRequest::Exactly(IsolationMode::Pod)),
            other => Err(format!(
                "--isolation {other:?}: expected auto, sandbox, pod or process"
            )),
        }
    }
}

/// The mode chosen at start, and why the sandbox is not used where `auto` fell back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsolationChoice {
    pub mode: IsolationMode,
    /// Set when `auto` wanted the sandbox and the probe failed: the probe's error.
    pub fallback_reason: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IsolationError {
    #[error("--isolation sandbox: this machine cannot run a bubblewrap sandbox: {0}")]
    SandboxUnavailable(String),
    #[error(
        "{what} needs jobs isolated (--isolation sandbox or pod); with --isolation process an \
         agent runs only its owner's listings"
    )]
    NeedsIsolation { what: String },
    #[error("--serve takes `any` or provider addresses, not both")]
    AnyAndAddresses,
    #[error("--serve {item:?}: {error}")]
    BadProvider { item: String, error: String },
}

/// Decides the mode from the request and the sandbox probe's result.
pub fn choose_isolation(
    req: IsolationRequest,
    sandbox_probe: &Result<(), String>,
) -> Result<IsolationChoice, IsolationError> {
    match (req, sandbox_probe) {
        (IsolationRequest::Exactly(IsolationMode::Sandbox), Err(e)) => {
            Err(IsolationError::SandboxUnavailable(e.clone()))
        }
        (IsolationRequest::Exactly(mode), _) => Ok(IsolationChoice {
            mode,
            fallback_reason: None,
        }),
        (IsolationRequest::Auto, Ok(())) => Ok(IsolationChoice {
            mode: IsolationMode::Sandbox,
            fallback_reason: None,
        }),
        (IsolationRequest::Auto, Err(e)) => Ok(IsolationChoice {
            mode: IsolationMode::Process,
            fallback_reason: Some(e.clone()),
        }),
    }
}

/// Runs a trivial sandbox (`bwrap ... true`) with the namespaces jobs get. `Err` says why not.
pub fn probe_sandbox(bwrap: &Path) -> Result<(), String> {
    let out = Command::new(bwrap)
        .args(crate::sandbox::probe_args())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "cannot run {}: {e} (install the bubblewrap package)",
                bwrap.display()
            )
        })?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(format!(
        "{} failed ({}): {err} (user namespaces may be disabled: sysctl kernel.unprivileged_userns_clone / user.max_user_namespaces)",
        bwrap.display(),
        out.status
    ))
}

/// `--serve` as given: `any`, or provider addresses (repeatable or comma-separated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServeRequest {
    Any,
    Providers(Vec<Address>),
}

pub fn parse_serve(items: &[String]) -> Result<ServeRequest, IsolationError> {
    let items: Vec<&str> = items
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.contains(&"any") {
        return if items.iter().all(|s| *s == "any") {
            Ok(ServeRequest::Any)
        } else {
            Err(IsolationError::AnyAndAddresses)
        };
    }
    items
        .iter()
        .map(|s| {
            s.parse::<Address>()
                .map_err(|e| IsolationError::BadProvider {
                    item: s.to_string(),
                    error: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(ServeRequest::Providers)
}

/// Whose listings the agent serves, and what to say about it at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServesDecision {
    pub serves: Serves,
    /// A warning for the start-up log (narrowed serving, or serving nobody).
    pub notice: Option<String>,
}

/// The owner's listings always; others only as `--serve` lists them, and only where jobs are
/// isolated. Where `auto` could not sandbox, the agent narrows to its owner and says so; an
/// explicit `--isolation process` with others to serve is refused.
pub fn decide_serves(
    owner: Option<Address>,
    req: &ServeRequest,
    iso: &IsolationChoice,
) -> Result<ServesDecision, IsolationError> {
    let own: Vec<Address> = owner.into_iter().collect();
    let (wanted, what) = match req {
        ServeRequest::Any => (Serves::AnyProvider, "`--serve any`".to_string()),
        ServeRequest::Providers(list) => {
            let mut all = own.clone();
            for p in list {
                if !all.contains(p) {
                    all.push(*p);
                }
            }
            let strangers: Vec<String> = all
                .iter()
                .filter(|p| !own.contains(p))
                .map(Address::to_string)
                .collect();
            (
                Serves::Providers(all),
                format!("serving other providers ({})", strangers.join(", ")),
            )
        }
    };
    let foreign = match &wanted {
        Serves::AnyProvider => true,
        Serves::Providers(all) => all.iter().any(|p| !own.contains(p)),
    };
    if foreign && !iso.mode.isolates() {
        let Some(reason) = &iso.fallback_reason else {
            return Err(IsolationError::NeedsIsolation { what });
        };
        return Ok(ServesDecision {
            notice: Some(format!(
                "this machine cannot sandbox jobs ({reason}); {what} is not possible, so this \
                 agent runs only its owner's listings"
            )),
            serves: Serves::Providers(own),
        });
    }
    let notice = matches!(&wanted, Serves::Providers(l) if l.is_empty()).then(|| {
        "this agent serves no provider: pass --owner (its listings are served) or --serve".into()
    });
    Ok(ServesDecision {
        serves: wanted,
        notice,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aitbc_protocol::Keypair;

    fn addr() -> Address {
        Keypair::generate().address()
    }
    fn iso(mode: IsolationMode) -> IsolationChoice {
        IsolationChoice {
            mode,
            fallback_reason: None,
        }
    }
    fn fell_back() -> IsolationChoice {
        IsolationChoice {
            mode: IsolationMode::Process,
            fallback_reason: Some("no bwrap".into()),
        }
    }

    #[test]
    fn isolation_choice_follows_request_and_probe() {
        let ok = Ok(());
        let bad = Err("no userns".to_string());
        assert_eq!(
            choose_isolation(IsolationRequest::Auto, &ok).unwrap(),
            iso(IsolationMode::Sandbox)
        );
        assert_eq!(
            choose_isolation(IsolationRequest::Auto, &bad).unwrap(),
            IsolationChoice {
                mode: IsolationMode::Process,
                fallback_reason: Some("no userns".into())
            }
        );
        assert!(matches!(
            choose_isolation(IsolationRequest::Exactly(IsolationMode::Sandbox), &bad),
            Err(IsolationError::SandboxUnavailable(_))
        ));
        assert_eq!(
            choose_isolation(IsolationRequest::Exactly(IsolationMode::Pod), &bad)
                .unwrap()
                .mode,
            IsolationMode::Pod
        );
        assert_eq!(
            "pod".parse(),
            Ok(IsolationRequest::Exactly(IsolationMode::Pod))
        );
        assert!("docker".parse::<IsolationRequest>().is_err());
    }

    #[test]
    fn job_isolation_default_serves_only_the_owner() {
        let owner = addr();
        for mode in [
            IsolationMode::Process,
            IsolationMode::Sandbox,
            IsolationMode::Pod,
        ] {
            let d =
                decide_serves(Some(owner), &ServeRequest::Providers(vec![]), &iso(mode)).unwrap();
            assert_eq!(d.serves, Serves::Providers(vec![owner]), "{mode:?}");
            assert!(
                !d.serves.serves(&addr()),
                "a stranger is not served by default"
            );
        }
    }

    #[test]
    fn job_isolation_others_and_any_need_isolation() {
        let (owner, other) = (addr(), addr());
        let list = ServeRequest::Providers(vec![other]);
        assert_eq!(
            decide_serves(Some(owner), &list, &iso(IsolationMode::Sandbox))
                .unwrap()
                .serves,
            Serves::Providers(vec![owner, other])
        );
        assert_eq!(
            decide_serves(Some(owner), &ServeRequest::Any, &iso(IsolationMode::Pod))
                .unwrap()
                .serves,
            Serves::AnyProvider
        );
        for req in [&list, &ServeRequest::Any] {
            assert!(matches!(
                decide_serves(Some(owner), req, &iso(IsolationMode::Process)),
                Err(IsolationError::NeedsIsolation { .. })
            ));
            let d = decide_serves(Some(owner), req, &fell_back()).unwrap();
            assert_eq!(d.serves, Serves::Providers(vec![owner]));
            assert!(d.notice.unwrap().contains("cannot sandbox"));
        }
        // Listing only the owner is fine without isolation.
        let d = decide_serves(
            Some(owner),
            &ServeRequest::Providers(vec![owner]),
            &iso(IsolationMode::Process),
        )
        .unwrap();
        assert_eq!(d.serves, Serves::Providers(vec![owner]));
        let none = decide_serves(None, &ServeRequest::Providers(vec![]), &fell_back()).unwrap();
        assert!(none.notice.unwrap().contains("serves no provider"));
    }

    #[test]
    fn a_missing_bwrap_is_reported_not_ignored() {
        let e = probe_sandbox(Path::new("/nonexistent/bwrap")).unwrap_err();
        assert!(e.contains("install the bubblewrap package"), "{e}");
        let iso = choose_isolation(IsolationRequest::Auto, &Err(e)).unwrap();
        assert_eq!(iso.mode, IsolationMode::Process);
    }

    #[test]
    fn serve_flags_parse() {
        let (a, b) = (addr(), addr());
        assert_eq!(parse_serve(&[]).unwrap(), ServeRequest::Providers(vec![]));
        assert_eq!(parse_serve(&["any".into()]).unwrap(), ServeRequest::Any);
        assert_eq!(
            parse_serve(&[format!("{a},{b}")]).unwrap(),
            ServeRequest::Providers(vec![a, b])
        );
        assert_eq!(
            parse_serve(&[a.to_string(), b.to_string()]).unwrap(),
            ServeRequest::Providers(vec![a, b])
        );
        assert_eq!(
            parse_serve(&["any".into(), a.to_string()]),
            Err(IsolationError::AnyAndAddresses)
        );
        assert!(matches!(
            parse_serve(&["ait1234".into()]),
            Err(IsolationError::BadProvider { .. })
        ));
    }
}
