//! Ports for test replicas.

/// `count` consecutive ports free for UDP and TCP. They are taken below
/// the kernel's ephemeral range (32768 and up by default), so a client
/// socket of a drill running alongside cannot take one between this check
/// and the replica's bind (that lost a replica once), and each is handed
/// out once per test process.
pub fn free_ports(count: u16) -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    // Different test processes start at different places.
    let start = std::process::id() % 100 * 100;
    loop {
        let offset = NEXT.fetch_add(count as u32, std::sync::atomic::Ordering::SeqCst);
        let base = (LOW + (start + offset) % SPAN) as u16;
        if u32::from(base) + u32::from(count) > LOW + SPAN {
            continue;
        }
        if (0..count).all(|i| {
            std::net::UdpSocket::bind(("127.0.0.1", base + i)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()
        }) {
            return base;
        }
    }
}
