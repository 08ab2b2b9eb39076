use super::*;
use aitbc_protocol::tx::{Action, Transaction};
use aitbc_protocol::Keypair;
use proptest::prelude::*;

fn tx_fee(k: &Keypair, nonce: u64, fee: u128) -> (SignedTransaction, Hash) {
    let s = Transaction {
        chain_id: "c".into(),
        sender: k.public(),
        nonce,
        fee: Amount(fee),
        action: Action::Transfer {
            to: k.address(),
            amount: Amount(1),
        },
    }
    .sign(k);
    let h = s.hash();
    (s, h)
}

fn tx(k: &Keypair, nonce: u64) -> (SignedTransaction, Hash) {
    tx_fee(k, nonce, 1)
}

fn rich(nonce: u64) -> SenderState {
    SenderState {
        nonce,
        balance: Amount(u128::MAX / 2),
    }
}

fn limits(capacity: usize) -> MempoolLimits {
    MempoolLimits::with_capacity(capacity)
}

#[test]
fn aged_selection_skips_what_just_arrived() {
    let m = Mempool::new(100);
    let k = Keypair::generate();
    let (stx, h) = tx(&k, 0);
    m.insert(stx, h, rich(0)).unwrap();
    let long = Duration::from_secs(3600);
    assert!(m.select_aged(10, usize::MAX, long, |_| 0).is_empty());
    assert_eq!(
        m.select_aged(10, usize::MAX, Duration::ZERO, |_| 0).len(),
        1
    );
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(
        m.select_aged(10, usize::MAX, Duration::from_millis(5), |_| 0)
            .len(),
        1
    );
}

#[test]
fn dedups_bounds_and_selects_consecutive_nonces() {
    let m = Mempool::new(3);
    let k = Keypair::generate();
    let (t0, h0) = tx(&k, 0);
    let (t2, h2) = tx(&k, 2);
    m.insert(t0.clone(), h0, rich(0)).unwrap();
    assert_eq!(m.insert(t0, h0, rich(0)), Err(MempoolError::Duplicate(h0)));
    m.insert(t2, h2, rich(0)).unwrap();
    assert_eq!(
        m.select(10, |_| 0).len(),
        1,
        "nonce 1 missing: only nonce 0 is selectable"
    );
    assert_eq!(m.next_nonce(&k.address(), 0), 1);
    let (t1, h1) = tx(&k, 1);
    m.insert(t1, h1, rich(0)).unwrap();
    assert_eq!(m.select(10, |_| 0).len(), 3);
    assert_eq!(
        m.select(10, |_| 1).len(),
        2,
        "selection starts at the state's nonce"
    );
    let (t3, h3) = tx(&k, 3);
    assert_eq!(m.insert(t3, h3, rich(0)), Err(MempoolError::Full(3)));
    m.remove_committed(&[tx(&k, 0).0], &[h0], |_| 2);
    assert_eq!(m.len(), 1, "committed and stale nonces dropped");
    assert!(m.contains(&h2));
    assert!(m.due_for_regossip(Duration::from_secs(60), 10).is_empty());
    assert_eq!(m.due_for_regossip(Duration::ZERO, 10).len(), 1);
}

#[test]
fn selection_stops_at_the_byte_budget() {
    let m = Mempool::new(100);
    let keys: Vec<Keypair> = (0..4).map(|_| Keypair::generate()).collect();
    for k in &keys {
        let (t, h) = tx(k, 0);
        m.insert(t, h, rich(0)).unwrap();
    }
    let one = borsh::object_length(&tx(&keys[0], 0).0).unwrap();
    assert_eq!(m.select_aged(10, one * 2, Duration::ZERO, |_| 0).len(), 2);
}

#[test]
fn hostile_future_nonces_beyond_the_window_are_refused() {
    let m = Mempool::new(1000);
    let k = Keypair::generate();
    let window = m.limits().nonce_window;
    let (t, h) = tx(&k, window);
    assert_eq!(
        m.insert(t, h, rich(0)),
        Err(MempoolError::NonceGap {
            next: 0,
            got: window,
            window
        })
    );
    let (t, h) = tx(&k, 10_000);
    assert!(matches!(
        m.insert(t, h, rich(0)),
        Err(MempoolError::NonceGap { .. })
    ));
    // The window follows the executable run: with 0..5 pending, nonce 5 + window - 1 fits.
    for n in 0..5 {
        let (t, h) = tx(&k, n);
        m.insert(t, h, rich(0)).unwrap();
    }
    let (t, h) = tx(&k, 5 + window - 1);
    m.insert(t, h, rich(0)).unwrap();
    assert_eq!(m.queued(), 1);
}

#[test]
fn hostile_one_sender_cannot_take_the_pool() {
    let mut l = limits(10_000);
    l.per_sender = 8;
    l.nonce_window = 100;
    let m = Mempool::with_limits(l);
    let k = Keypair::generate();
    for n in 0..8 {
        let (t, h) = tx(&k, n);
        m.insert(t, h, rich(0)).unwrap();
    }
    let (t, h) = tx(&k, 8);
    let refused = m.insert(t, h, rich(0)).unwrap_err();
    assert_eq!(refused, MempoolError::SenderFull(8));
    assert!(refused.is_backpressure());
    // Others still get in.
    let (t, h) = tx(&Keypair::generate(), 0);
    m.insert(t, h, rich(0)).unwrap();
}

#[test]
fn hostile_gap_queues_are_capped_and_expire() {
    let mut l = limits(1000);
    l.max_queued = 3;
    l.queued_ttl = Duration::from_millis(0);
    let m = Mempool::with_limits(l);
    let spammers: Vec<Keypair> = (0..4).map(|_| Keypair::generate()).collect();
    // Each spammer skips nonce 0: its transactions can never execute and pay nothing.
    for k in &spammers[..3] {
        let (t, h) = tx(k, 1);
        m.insert(t, h, rich(0)).unwrap();
    }
    let (t, h) = tx(&spammers[3], 1);
    assert_eq!(m.insert(t, h, rich(0)), Err(MempoolError::QueuedFull(3)));
    // An executable transaction is not held up by the queue cap.
    let honest = Keypair::generate();
    let (t, h) = tx(&honest, 0);
    m.insert(t, h, rich(0)).unwrap();
    assert_eq!(m.expire_queued(Instant::now()), 3);
    assert_eq!((m.len(), m.queued()), (1, 0), "only the honest one stays");
}

#[test]
fn a_commit_elsewhere_makes_what_waited_behind_it_executable() {
    let m = Mempool::new(100);
    let k = Keypair::generate();
    let (t1, h1) = tx(&k, 1);
    m.insert(t1, h1, rich(0)).unwrap();
    assert_eq!(m.queued(), 1);
    // Nonce 0 reached the chain through another node and never entered this pool.
    let (t0, h0) = tx(&k, 0);
    m.remove_committed(&[t0], &[h0], |_| 1);
    assert_eq!(m.queued(), 0, "nonce 1 is executable now");
    assert_eq!(
        m.expire_queued(Instant::now() + Duration::from_secs(3600)),
        0
    );
    assert!(m.contains(&h1));
}

#[test]
fn hostile_filling_the_gap_makes_queued_transactions_executable() {
    let m = Mempool::new(100);
    let k = Keypair::generate();
    let (t, h) = tx(&k, 1);
    m.insert(t, h, rich(0)).unwrap();
    assert_eq!(m.queued(), 1);
    let (t, h) = tx(&k, 0);
    m.insert(t, h, rich(0)).unwrap();
    assert_eq!(m.queued(), 0);
    assert_eq!(
        m.expire_queued(Instant::now() + Duration::from_secs(3600)),
        0
    );
}

#[test]
fn hostile_sender_must_afford_the_fees_of_everything_pending() {
    let m = Mempool::new(100);
    let k = Keypair::generate();
    let poor = SenderState {
        nonce: 0,
        balance: Amount(25),
    };
    for n in 0..2 {
        let (t, h) = tx_fee(&k, n, 10);
        m.insert(t, h, poor).unwrap();
    }
    let (t, h) = tx_fee(&k, 2, 10);
    assert_eq!(
        m.insert(t, h, poor),
        Err(MempoolError::FeesUnaffordable {
            balance: Amount(25),
            pending: Amount(20),
            fee: Amount(10)
        })
    );
    // Once the first commits (fee paid), its fee no longer counts against the balance.
    let (t0, h0) = tx_fee(&k, 0, 10);
    m.remove_committed(&[t0], &[h0], |_| 1);
    let after = SenderState {
        nonce: 1,
        balance: Amount(15),
    };
    let (t, h) = tx_fee(&k, 2, 5);
    m.insert(t, h, after).unwrap();
}

#[test]
fn hostile_a_full_pool_evicts_only_what_pays_less() {
    let m = Mempool::new(3);
    let cheap: Vec<Keypair> = (0..3).map(|_| Keypair::generate()).collect();
    let mut hashes = vec![];
    for k in &cheap {
        let (t, h) = tx_fee(k, 0, 1);
        m.insert(t, h, rich(0)).unwrap();
        hashes.push(h);
    }
    let honest = Keypair::generate();
    // The same fee cannot push out what came first.
    let (t, h) = tx_fee(&honest, 0, 1);
    assert_eq!(m.insert(t, h, rich(0)), Err(MempoolError::Full(3)));
    // A higher fee evicts the oldest of the lowest-paying.
    let (t, h) = tx_fee(&honest, 0, 2);
    let admitted = m.insert(t, h, rich(0)).unwrap();
    assert_eq!(admitted.evicted, vec![hashes[0]]);
    assert!(m.contains(&h) && !m.contains(&hashes[0]));
}

#[test]
fn hostile_eviction_takes_a_senders_last_nonce_never_a_middle_one() {
    let m = Mempool::new(3);
    let k = Keypair::generate();
    let mut hs = vec![];
    for n in 0..3 {
        let (t, h) = tx_fee(&k, n, 1 + 10 * (2 - n as u128));
        m.insert(t, h, rich(0)).unwrap();
        hs.push(h);
    }
    // Nonce 0 pays 21, nonce 2 pays 1: the victim is nonce 2 (the tail), not the cheapest
    // middle; a newcomer paying 5 evicts it.
    let other = Keypair::generate();
    let (t, h) = tx_fee(&other, 0, 5);
    assert_eq!(m.insert(t, h, rich(0)).unwrap().evicted, vec![hs[2]]);
    assert_eq!(m.select(10, |_| 0).len(), 3, "no gap was opened");
}

#[test]
fn hostile_the_byte_budget_bounds_memory() {
    let mut l = limits(1000);
    let one = borsh::object_length(&tx(&Keypair::generate(), 0).0).unwrap();
    l.max_bytes = one * 2;
    let m = Mempool::with_limits(l);
    for _ in 0..2 {
        let (t, h) = tx(&Keypair::generate(), 0);
        m.insert(t, h, rich(0)).unwrap();
    }
    let (t, h) = tx(&Keypair::generate(), 0);
    assert_eq!(m.insert(t, h, rich(0)), Err(MempoolError::Full(1000)));
    assert!(m.bytes() <= one * 2);
}

#[derive(Clone, Debug)]
enum Op {
    Insert {
        sender: usize,
        nonce: u64,
        fee: u128,
    },
    Commit {
        sender: usize,
        upto: u64,
    },
    Expire,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..6usize, 0..12u64, 1..5u128).prop_map(|(sender, nonce, fee)| Op::Insert { sender, nonce, fee }),
        2 => (0..6usize, 0..12u64).prop_map(|(sender, upto)| Op::Commit { sender, upto }),
        1 => Just(Op::Expire),
    ]
}

/// The pool's counters and indexes agree with what it holds, and no bound is exceeded.
fn check_invariants(m: &Mempool) {
    let l = m.limits().clone();
    let inner = m.inner.lock();
    assert!(inner.by_hash.len() <= l.capacity);
    assert!(inner.bytes <= l.max_bytes);
    assert_eq!(
        inner.bytes,
        inner.by_hash.values().map(|e| e.bytes).sum::<usize>()
    );
    let held: usize = inner.by_sender.values().map(|q| q.nonces.len()).sum();
    assert_eq!(
        held,
        inner.by_hash.len(),
        "every entry in exactly one queue"
    );
    let queued: usize = inner.by_sender.values().map(|q| q.queued()).sum();
    assert_eq!(queued, inner.queued);
    assert!(inner.queued <= l.max_queued);
    let mut tails = BTreeSet::new();
    for (a, q) in &inner.by_sender {
        assert!(!q.nonces.is_empty());
        assert!(q.nonces.len() <= l.per_sender);
        let fees: u128 = q
            .nonces
            .values()
            .map(|h| inner.by_hash[h].tx.tx.fee.0)
            .sum();
        assert_eq!(q.fees.0, fees, "fees of {a}");
        assert!(q.nonces.keys().all(|n| *n >= q.floor));
        let run = q.next_nonce(q.floor);
        assert_eq!(run, q.ready_end.max(q.floor), "executable run of {a}");
        tails.insert(inner.tail_key(a).unwrap());
    }
    assert_eq!(tails, inner.tails);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn hostile_random_traffic_keeps_every_bound(ops in proptest::collection::vec(op(), 1..120)) {
        let mut l = limits(12);
        l.per_sender = 5;
        l.nonce_window = 4;
        l.max_queued = 3;
        l.queued_ttl = Duration::ZERO;
        l.max_bytes = 10 * borsh::object_length(&tx(&Keypair::generate(), 0).0).unwrap();
        let m = Mempool::with_limits(l);
        let keys: Vec<Keypair> = (0..6).map(|_| Keypair::generate()).collect();
        let mut committed = [0u64; 6];
        for op in ops {
            match op {
                Op::Insert { sender, nonce, fee } => {
                    let (t, h) = tx_fee(&keys[sender], committed[sender] + nonce, fee);
                    let _ = m.insert(t, h, SenderState { nonce: committed[sender], balance: Amount(40) });
                }
                Op::Commit { sender, upto } => {
                    // A block commits the sender's nonce `upto` (and so every nonce below it).
                    let upto = committed[sender] + upto;
                    committed[sender] = upto + 1;
                    let (t, h) = tx(&keys[sender], upto);
                    m.remove_committed(&[t], &[h], |a| {
                        keys.iter().position(|k| k.address() == *a).map_or(0, |i| committed[i])
                    });
                }
                Op::Expire => {
                    m.expire_queued(Instant::now());
                }
            }
            check_invariants(&m);
        }
    }
}
