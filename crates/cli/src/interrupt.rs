//! Ctrl-C (SIGINT) and SIGTERM during training: the first one asks the trainer to stop after the
//! current step and write a checkpoint to resume from; a second one quits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// Exit status of a run stopped by the user (128 + SIGINT, as shells report it).
pub const INTERRUPTED_EXIT: u8 = 130;

/// The flag the signal handler sets, installing the handler on first use. When the handler cannot
/// be installed the flag is never set and Ctrl-C keeps its default effect.
pub fn stop_flag() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let seen = flag.clone();
        let installed = ctrlc::set_handler(move || {
            if seen.swap(true, Ordering::SeqCst) {
                eprintln!("\nstopping now");
                std::process::exit(i32::from(INTERRUPTED_EXIT));
            }
            eprintln!(
                "\nstopping after the current step and saving a checkpoint (press Ctrl-C again \
                 to quit at once)"
            );
        });
        if let Err(e) = installed {
            eprintln!("warning: Ctrl-C will not save a checkpoint ({e})");
        }
        flag
    })
    .clone()
}
