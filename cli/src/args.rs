//! The command line: global options and every command, with the help text that documents
//! the exit codes and where the state key lives.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::until::Until;

/// The relay `tidings-relay serve` listens on by default.
pub const DEFAULT_RELAY: &str = "http://127.0.0.1:7400";
/// Its OHTTP gateway's default address (`[ohttp] listen`), `--relay` with `--ohttp-relay`.
pub const DEFAULT_OHTTP_GATEWAY: &str = "http://127.0.0.1:7402";

const ABOUT: &str = "A terminal client for a tidings relay: accounts, sealed messages, linking a second \
device by QR code, and the config (contacts, profile, settings) every device of an account shares.";

const STATE_KEY_HELP: &str = "\
State and its key:
  Everything a device keeps (its account, config, pending messages) lives in the state dir, sealed under
  a 32-byte state key. A phone keeps that key in its Keychain or Keystore; a terminal has neither, so
  tidings keeps it in the file `key` in the state dir (mode 0600, created on first use). Whoever can read
  that file and the state dir can read the account: protect the directory, or keep the key elsewhere
  with --key-file.";

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    ok
  1    anything else (a \"no\" at a prompt, output that could not be written)
  2    usage: bad arguments, or a state dir not ready for the command (no account yet, or one already)
  3    bad input: a wrong phrase word or checksum, a malformed or unknown account id, a damaged link
       code, a name too long; nothing was written
  4    the relay is unreachable (or its certificate is not trusted)
  5    the relay refused the request
  6    state error: a corrupted state dir, a missing or damaged key file, a state dir in use by
       another tidings command
  7    linking did not complete: declined, the codes differ, or it timed out
  130  interrupted (Ctrl-C) while linking
  With --ohttp-relay: 4 also when the OHTTP relay or the gateway cannot be reached (a relay without
  OHTTP has no gateway listening, and its gRPC address does not answer HTTP/1.1); 5 also when what
  answers at --relay serves no OHTTP key configuration (not the gateway), the OHTTP relay does not
  forward the request, or the gateway no longer accepts the pinned key (it is forgotten: run the
  command again, which fetches the current one).";

const OHTTP_HELP: &str = "\
Oblivious HTTP (--ohttp-relay):
  Every call goes, encrypted to the relay's OHTTP gateway key (RFC 9458), through an independent OHTTP
  relay: the tidings relay never sees this machine's IP address (only the OHTTP relay's), and the OHTTP
  relay sees the address but only ciphertext. --relay is then the relay's OHTTP gateway ([ohttp] listen
  in its config, http://127.0.0.1:7402 by default), and the privacy holds only if the two are run by
  different people. The gateway's key configuration is fetched from --relay once, directly (that one
  request shows the address to the relay, with nothing in it), and kept in the state dir
  (ohttp-keys.json); later commands reuse it and follow the gateway's key rotations. With
  --ohttp-keys FILE (saved with `curl -s GATEWAY/.well-known/ohttp-gateway > FILE`, e.g. on another
  network) nothing is ever fetched directly.";

/// `tidings`: the whole command line.
#[derive(Debug, Parser)]
#[command(
    name = "tidings",
    version,
    about = ABOUT,
    after_help = format!("{STATE_KEY_HELP}\n\n{OHTTP_HELP}\n\n{EXIT_CODES_HELP}"),
    propagate_version = true
)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// The relay's address (http://HOST:PORT or https://HOST:PORT), or with --ohttp-relay its OHTTP
    /// gateway's [default: http://127.0.0.1:7400; with --ohttp-relay, http://127.0.0.1:7402].
    #[arg(long, global = true, env = "TIDINGS_RELAY", value_name = "URL")]
    pub relay: Option<String>,
    /// Reach the relay only through this OHTTP relay (Oblivious HTTP): the relay never sees this
    /// machine's IP address, the OHTTP relay sees only ciphertext. --relay is then the relay's OHTTP
    /// gateway. More under "Oblivious HTTP" in `tidings --help`.
    #[arg(long, global = true, env = "TIDINGS_OHTTP_RELAY", value_name = "URL")]
    pub ohttp_relay: Option<String>,
    /// With --ohttp-relay: the gateway's key configuration (as GATEWAY/.well-known/ohttp-gateway
    /// serves it), used instead of fetching it, until the state dir has pinned one of its own.
    #[arg(long, global = true, env = "TIDINGS_OHTTP_KEYS", value_name = "FILE")]
    pub ohttp_keys: Option<PathBuf>,
    /// Where this device's state lives [default: the platform's data dir, e.g. ~/.local/share/tidings].
    #[arg(long, global = true, env = "TIDINGS_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The state key file [default: `key` in the state dir]. A terminal has no Keychain, so the key
    /// is kept in this file (mode 0600, created on first use).
    #[arg(long, global = true, env = "TIDINGS_KEY_FILE", value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Print one JSON object per result (per message for `listen`) on stdout; no progress bars.
    #[arg(long, global = true)]
    pub json: bool,
    /// Answer yes to every confirmation, for scripts. When linking, this skips comparing the
    /// six-digit codes, which is what keeps someone who saw the QR code out: use it only with
    /// devices you hold.
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,
    /// Do not sync with the relay first: show and edit the copy on this device (edits upload with
    /// the next command that syncs).
    #[arg(long, global = true)]
    pub offline: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, restore, show or sign out of this device's account.
    Account {
        /// What to do with the account.
        #[command(subcommand)]
        action: AccountAction,
    },
    /// Send a message to an account, sealed so that only it can read it and knows it is from you.
    Send(SendArgs),
    /// Print messages as they arrive (sender and text), acknowledging each once printed.
    Listen(ListenArgs),
    /// Link a second device to this account by QR code.
    Link {
        /// Which side of linking.
        #[command(subcommand)]
        action: LinkAction,
    },
    /// The account's contacts, shared by all its devices [default: list].
    Contacts(ContactsArgs),
    /// The account's profile, shared by all its devices [default: show].
    Profile {
        /// What to do with the profile.
        #[command(subcommand)]
        action: Option<ProfileAction>,
    },
    /// The account's settings, shared by all its devices [default: show].
    Settings {
        /// What to do with the settings.
        #[command(subcommand)]
        action: Option<SettingsAction>,
    },
    /// Push notifications for this device, for demos: subscribe a Web Push endpoint, unsubscribe.
    Push {
        /// What to do.
        #[command(subcommand)]
        action: PushAction,
    },
    /// Print a shell completion script (e.g. `tidings completions bash > ~/.local/share/bash-completion/completions/tidings`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `tidings account …`.
#[derive(Debug, Subcommand)]
pub enum AccountAction {
    /// Create a new account on this device and show its recovery phrase, once.
    Create,
    /// Sign this device in to an account by its recovery phrase (typed at a hidden prompt, or one
    /// line on stdin when stdin is not a terminal; never an argument).
    Restore,
    /// Print the account id (what others send messages to), alone on its line.
    Show {
        /// Print the recovery phrase as well (asks first).
        #[arg(long)]
        phrase: bool,
    },
    /// Sign this device out: it forgets the account (asks first; only the phrase brings it back).
    SignOut,
}

/// `tidings send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The recipient's account id ("01" and 64 hex digits).
    #[arg(value_name = "ACCOUNT_ID")]
    pub account_id: String,
    /// The message; `-` reads it from stdin.
    #[arg(value_name = "TEXT")]
    pub text: String,
    /// Deposit TEXT as opaque bytes, not sealed (anyone reading the mailbox sees them as they are).
    #[arg(long)]
    pub raw: bool,
}

/// `tidings listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Print what is waiting and exit instead of waiting for more.
    #[arg(long)]
    pub once: bool,
}

/// `tidings link …`.
#[derive(Debug, Subcommand)]
pub enum LinkAction {
    /// On the new device: show a QR code (and its text) to scan with `tidings link scan` on a device
    /// already signed in, compare the codes, and sign in to its account.
    Show {
        /// The name the other device shows for this one [default: "tidings on HOSTNAME"].
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// How long to wait for the other device, each step, in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 300)]
        timeout: u64,
    },
    /// On a device signed in: read a new device's code (the text `tidings link show` prints), show
    /// its name and code, and approve or decline.
    Scan {
        /// The link code (`tidings-link:v2:…`); `-` reads it from stdin.
        #[arg(value_name = "PAYLOAD")]
        payload: String,
        /// Decline without asking.
        #[arg(long, conflicts_with = "yes")]
        decline: bool,
    },
}

const WEB_PUSH_HELP: &str = "\
This is for demos: a terminal gets no pushes itself. The subscription comes from whatever will
receive the pushes: a browser (PushManager.subscribe) or a UnifiedPush distributor and its connector.
The private key that decrypts them stays there; the relay encrypts each push to p256dh and auth
(RFC 8291). What that receiver decrypts is the `enc` string of a tidings push, which only this
device's push key opens (device-link's decrypt_push). The relay pushes on new messages and config
changes for this account, until the registration expires (renew before expires_ms) or
`tidings push unsubscribe`; a sign-out removes it too.";

/// `tidings push …`.
#[derive(Debug, Subcommand)]
pub enum PushAction {
    /// Register a Web Push subscription for this device (Fast Mode, for demos).
    #[command(after_help = WEB_PUSH_HELP)]
    SubscribeWebPush(WebPushArgs),
    /// Remove this device's push registration from the relay (back to polling).
    Unsubscribe,
}

/// `tidings push subscribe-web-push`.
#[derive(Debug, Args)]
pub struct WebPushArgs {
    /// The push resource URL the subscription gave (PushSubscription.endpoint).
    #[arg(long, value_name = "URL")]
    pub endpoint: String,
    /// The subscription's P-256 public key, base64url (padded or not): 65 bytes starting 0x04.
    #[arg(long, value_name = "BASE64URL")]
    pub p256dh: String,
    /// The subscription's authentication secret, base64url (padded or not): 16 bytes.
    #[arg(long, value_name = "BASE64URL")]
    pub auth: String,
    /// The app the relay pushes for (one of its [[apps]] with [apps.webpush]).
    #[arg(long, value_name = "ID")]
    pub app_id: String,
}

/// `tidings contacts`.
#[derive(Debug, Args)]
pub struct ContactsArgs {
    /// What to do with the contacts.
    #[command(subcommand)]
    pub action: Option<ContactsAction>,
}

/// `tidings contacts …`.
#[derive(Debug, Subcommand)]
pub enum ContactsAction {
    /// List the contacts.
    List {
        /// Keep listing: print the list again whenever another device changes it (Ctrl-C stops).
        #[arg(long)]
        watch: bool,
    },
    /// Add a contact (or rename one), approving its messages.
    Add {
        /// The contact's account id.
        #[arg(value_name = "ID")]
        account_id: String,
        /// The contact's name.
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Remove a contact.
    Remove {
        /// The contact's account id.
        #[arg(value_name = "ID")]
        account_id: String,
    },
    /// Block an account: its messages are dropped unread (it becomes a contact if it is none).
    Block {
        /// The account id.
        #[arg(value_name = "ID")]
        account_id: String,
    },
    /// Unblock a contact.
    Unblock {
        /// The contact's account id.
        #[arg(value_name = "ID")]
        account_id: String,
    },
    /// Mute a contact's notifications for a while.
    Mute {
        /// The contact's account id.
        #[arg(value_name = "ID")]
        account_id: String,
        /// For how long: a number and s, m, h, d or w (`30m`, `8h`, `2d`), or `forever`.
        #[arg(long, value_name = "WHEN", value_parser = crate::until::parse)]
        until: Until,
    },
    /// Unmute a contact.
    Unmute {
        /// The contact's account id.
        #[arg(value_name = "ID")]
        account_id: String,
    },
}

impl Default for ContactsAction {
    fn default() -> Self {
        ContactsAction::List { watch: false }
    }
}

/// `tidings profile …`.
#[derive(Debug, Default, Subcommand)]
pub enum ProfileAction {
    /// Show the profile.
    #[default]
    Show,
    /// Set the display name.
    SetName {
        /// The new display name.
        #[arg(value_name = "NAME")]
        name: String,
    },
}

/// `tidings settings …`.
#[derive(Debug, Default, Subcommand)]
pub enum SettingsAction {
    /// Show the settings.
    #[default]
    Show,
    /// Choose what notifications show (on every device of the account).
    #[command(group(ArgGroup::new("which").required(true).multiple(true).args(["sender", "content"])))]
    Previews {
        /// Show the sender's name.
        #[arg(long, value_name = "on|off")]
        sender: Option<Toggle>,
        /// Show the message text.
        #[arg(long, value_name = "on|off")]
        content: Option<Toggle>,
    },
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Toggle {
    /// Yes.
    On,
    /// No.
    Off,
}

impl Toggle {
    /// `true` for `on`.
    pub fn is_on(self) -> bool {
        self == Toggle::On
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn contacts_list_is_the_default() {
        let cli = Cli::try_parse_from(["tidings", "contacts"]).unwrap();
        match cli.command {
            Command::Contacts(ContactsArgs { action: None }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn previews_need_something_to_change() {
        assert!(Cli::try_parse_from(["tidings", "settings", "previews"]).is_err());
        let cli = Cli::try_parse_from(["tidings", "settings", "previews", "--content", "on"]).unwrap();
        match cli.command {
            Command::Settings {
                action: Some(SettingsAction::Previews { sender, content }),
            } => {
                assert_eq!(sender, None);
                assert_eq!(content, Some(Toggle::On));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_help_names_the_exit_codes_and_the_key_file() {
        let help = Cli::command().render_help().to_string();
        assert!(help.contains("Exit codes:"), "{help}");
        assert!(help.contains("Keychain"), "{help}");
    }

    #[test]
    fn the_help_says_what_ohttp_hides() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("--ohttp-relay"), "{help}");
        assert!(help.contains("never sees this machine's IP address"), "{help}");
        assert!(help.contains("only ciphertext"), "{help}");
        assert!(help.contains("ohttp-keys.json"), "{help}");
    }

    #[test]
    fn web_push_takes_its_four_values() {
        let cli = Cli::try_parse_from([
            "tidings",
            "push",
            "subscribe-web-push",
            "--endpoint",
            "https://push.example/x",
            "--p256dh",
            "BA",
            "--auth",
            "AA",
            "--app-id",
            "com.example.messenger",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Push {
                action: PushAction::SubscribeWebPush(_)
            }
        ));
        assert!(Cli::try_parse_from(["tidings", "push", "subscribe-web-push", "--endpoint", "x"]).is_err());
        let mut push = Cli::command();
        let help = push
            .find_subcommand_mut("push")
            .and_then(|p| p.find_subcommand_mut("subscribe-web-push"))
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(help.contains("for demos"), "{help}");
        assert!(
            help.contains("The private key that decrypts them stays there"),
            "{help}"
        );
        assert!(help.contains("`enc` string"), "{help}");
    }
}
