//! Hostile clients against a real node: transactions that would take block space for free.

mod common;

use aitbc_protocol::client::ClientError;
use aitbc_protocol::tx::{Action, Transaction};
use aitbc_protocol::{Amount, Keypair};
use common::TestNet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

async fn fund_one_ait(net: &TestNet, to: &Keypair) {
    let fee: Amount = "0.001".parse().unwrap();
    let fund = Action::Transfer {
        to: to.address(),
        amount: "1".parse().unwrap(),
    };
    net.client(0)
        .await
        .send_and_wait(&net.genesis_ops(), fund, fee, WAIT)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_transactions_failing_the_envelope_never_take_block_space() {
    let mut net = TestNet::new(1, 0, 100);
    net.start(0);
    net.wait_height(0, 1, WAIT).await;
    let c = net.client(0).await;
    let chain_id = c.status().await.unwrap().chain_id;
    let fee: Amount = "0.001".parse().unwrap();
    let attacker = Keypair::generate();
    fund_one_ait(&net, &attacker).await;
    let sign = |nonce: u64, amount: Amount| {
        Transaction {
            chain_id: chain_id.clone(),
            sender: attacker.public(),
            nonce,
            fee,
            action: Action::Transfer {
                to: Keypair::generate().address(),
                amount,
            },
        }
        .sign(&attacker)
    };
    // The first spends everything but its fee; the second then cannot pay its own fee. Both
    // pass admission (the balance covers both fees at the committed state), but in a block the
    // second fails the envelope check: it would pay nothing for its place.
    let drain = sign(0, "0.999".parse().unwrap());
    let free_rider = sign(1, Amount(1));
    let drained = c.submit(&drain).await.unwrap();
    let riding = c.submit(&free_rider).await.unwrap();
    c.wait(&drained, WAIT).await.unwrap();
    let top = c.status().await.unwrap().height;
    net.wait_height(0, top + 5, WAIT).await;
    match c.transaction(&riding, false).await {
        Err(ClientError::NotFound(_)) => {}
        Ok(info) => panic!(
            "a transaction that pays no fee must not be in a block (status {}, height {}, error {:?})",
            info.status, info.height, info.error
        ),
        Err(e) => panic!("unexpected error {e}"),
    }
    let (balance, _) = c.balance(&attacker.address()).await.unwrap();
    assert_eq!(balance, Amount::ZERO);
    // The nonce was not used: a funded retry with nonce 1 commits.
    fund_one_ait(&net, &attacker).await;
    let retry = c.submit(&sign(1, Amount(1))).await.unwrap();
    let committed = c.wait(&retry, WAIT).await.unwrap();
    assert!(committed.receipt.error.is_none(), "{:?}", committed.receipt);
}
