//! `bftlog bench --read`: inclusion proofs served per second from a log
//! filled to `--log-size`, and the fill itself (which `--tiles` shares).

use super::*;

/// Appends until the log holds `log_size` entries; returns how long it
/// took.
pub(super) async fn fill_log(
    client: &Client,
    log_size: u64,
    entry_bytes: usize,
) -> Result<Duration> {
    let size = client.checkpoint().await?.checkpoint().size;
    let fill_start = Instant::now();
    if size < log_size {
        // Three appends of 4,096 entries in flight: filling is a setup
        // step, and one at a time it is bound by commit latency; more
        // would pass one client's share of the mempool (12,500 entries),
        // whose `Overloaded` answers are waited out and retried.
        let next_batch = Arc::new(AtomicU64::new(0));
        let batches = (log_size - size).div_ceil(4096);
        let remaining = log_size - size;
        let mut fills = tokio::task::JoinSet::new();
        for _ in 0..3 {
            let (client, next_batch) = (client.clone(), next_batch.clone());
            fills.spawn(async move {
                loop {
                    let n = next_batch.fetch_add(1, Ordering::Relaxed);
                    if n >= batches {
                        return Ok::<(), anyhow::Error>(());
                    }
                    let count = (remaining - n * 4096).min(4096);
                    let items: Vec<Vec<u8>> = (0..count)
                        .map(|i| {
                            let mut e = format!("read bench fill {size} {n} {i} ").into_bytes();
                            e.resize(entry_bytes, b'.');
                            e
                        })
                        .collect();
                    let mut attempt = 0;
                    while let Err(e) = client.append(&items).await {
                        attempt += 1;
                        if attempt == 10 {
                            return Err(e.into());
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            });
        }
        while let Some(r) = fills.join_next().await {
            r??;
        }
    }
    Ok(fill_start.elapsed())
}

/// Fills the log to `--log-size` entries, then has the clients request
/// inclusion proofs of random indexes for `--seconds`; proofs are counted
/// as served, and one in 64 is verified against the checkpoint.
pub(super) async fn read_bench(args: &BenchArgs, json_output: bool, client: &Client) -> Result<()> {
    let per_request = args.proofs_per_request;
    if per_request == 0 || per_request > bftlog_spec::wire::MAX_PROOF_BATCH {
        bail!("--proofs-per-request must be 1 to 1024");
    }
    let fill = fill_log(client, args.log_size, args.entry_bytes).await?;
    let checkpoint = client.checkpoint().await?;
    let tree_size = checkpoint.checkpoint().size;
    let served = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..args.clients {
        let client = client.clone();
        let served = served.clone();
        let root = checkpoint.checkpoint().root;
        tasks.spawn(async move {
            let mut x = (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let replica = c % client.cluster().n();
            while Instant::now() < deadline {
                let indexes: Vec<u64> = (0..per_request)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x % tree_size
                    })
                    .collect();
                let proofs = if per_request == 1 {
                    let request = ClientRequest::GetInclusionProof {
                        leaf: LeafRef::Index { index: indexes[0] },
                        tree_size,
                    };
                    match client.request(replica, &request).await? {
                        ClientResponse::InclusionProof { hashes, .. } => vec![hashes.into_inner()],
                        _ => bail!("unexpected answer to an inclusion proof request"),
                    }
                } else {
                    client
                        .inclusion_proofs(replica, &indexes, tree_size)
                        .await?
                };
                let before = served.fetch_add(per_request as u64, Ordering::Relaxed);
                // Check one proof in 64 against the entry it proves.
                if before / 64 != (before + per_request as u64) / 64 {
                    let (index, hashes) = (indexes[0], &proofs[0]);
                    let entry = client.entries(index, 1).await?;
                    let leaf = bftlog_spec::merkle::leaf_hash(&entry[0]);
                    bftlog_spec::merkle::verify_inclusion(index, tree_size, &leaf, hashes, &root)
                        .map_err(|e| anyhow::anyhow!("a served proof does not verify: {e}"))?;
                }
            }
            Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let total = served.load(Ordering::Relaxed);
    let report = json!({
        "mode": "read",
        "tree_size": tree_size,
        "fill_seconds": fill.as_secs_f64(),
        "clients": args.clients,
        "proofs_per_request": per_request,
        "seconds": elapsed,
        "proofs": total,
        "proofs_per_second": total as f64 / elapsed,
    });
    if json_output {
        println!("{report}");
    } else {
        println!(
            "read: {total} inclusion proofs from a {tree_size}-entry log in {elapsed:.1} s = {:.0} proofs/s ({} clients, {per_request} proofs per request; filling took {:.0} s)",
            total as f64 / elapsed,
            args.clients,
            fill.as_secs_f64()
        );
    }
    Ok(())
}
