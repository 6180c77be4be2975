//! Appends journal entries from several threads of one process: even threads each append
//! in a transaction of its own, odd threads through the group writer. Used by the
//! multi-process tests:
//! `journal_writer DATABASE_URL THREADS APPENDS_PER_THREAD`.

use broker_core::journal::{Action, Entry};
use broker_store::{journal, DatabaseUrl, Db};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, threads, appends] = args.as_slice() else {
        eprintln!("usage: journal_writer DATABASE_URL THREADS APPENDS_PER_THREAD");
        std::process::exit(2);
    };
    let threads: usize = threads.parse().expect("THREADS");
    let appends: usize = appends.parse().expect("APPENDS_PER_THREAD");
    let db = Db::open(&DatabaseUrl::parse(url), threads as u32).expect("database");
    let pid = std::process::id();
    std::thread::scope(|s| {
        for t in 0..threads {
            let db = db.clone();
            s.spawn(move || {
                for i in 0..appends {
                    let e = Entry::new(Action::JournalExported).detail("pid", pid).detail("thread", t).detail("i", i);
                    if t % 2 == 0 {
                        db.write(|c| journal::append(c, &[e])).expect("append");
                    } else {
                        db.append_grouped(vec![e]).expect("grouped append");
                    }
                }
            });
        }
    });
}
