//! The floor of open-loop pacing on this machine: the least a client can spend to send requests
//! one at a time at a fixed rate. One blocking keep-alive connection, one thread: sleep until the
//! slot, write the request, read the response (head parsed with httparse, body by
//! `Content-Length`), repeat. No event loop, no timeouts, no histograms, no second connection.
//! Whatever CPU this costs per request (most of it the kernel's: the loopback send runs the
//! server socket's receive path and wakes the server) no full generator can go below while it
//! sends each request at its own time.
//!
//! `cargo xtask bench loadtest` runs it beside the generators. By hand:
//! `cargo run --release -p stackproof-loadtest --example paced_floor -- 127.0.0.1:8080 5000 10`
//! prints `requests p50_ms p99_ms p99_9_ms` (latency from the intended send time).

use std::error::Error;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, rate, secs] = args.as_slice() else {
        return Err("usage: paced_floor HOST:PORT RATE SECONDS".into());
    };
    let rate: f64 = rate.parse().map_err(|e| format!("RATE {rate:?}: {e}"))?;
    let secs: f64 = secs.parse().map_err(|e| format!("SECONDS {secs:?}: {e}"))?;
    if !(rate.is_finite() && rate > 0.0 && secs.is_finite() && secs > 0.0) {
        return Err("RATE and SECONDS must be positive".into());
    }
    let mut stream = TcpStream::connect(addr.as_str())?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let request = format!("GET / HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    let n = (rate * secs) as usize;
    let mut latencies = Vec::with_capacity(n);
    let mut buf = vec![0u8; 16 * 1024];
    let start = Instant::now();
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        stream.write_all(request.as_bytes())?;
        read_response(&mut stream, &mut buf)?;
        latencies.push(due.elapsed());
    }
    latencies.sort();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1));
        latencies
            .get(i)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{} {:.3} {:.3} {:.3}",
        latencies.len(),
        at(0.5),
        at(0.99),
        at(0.999)
    );
    Ok(())
}

/// Reads one response with a `Content-Length` body.
fn read_response(stream: &mut TcpStream, buf: &mut [u8]) -> Result<(), Box<dyn Error>> {
    let mut have = 0;
    loop {
        let got = stream.read(&mut buf[have..])?;
        if got == 0 {
            return Err("the server closed the connection".into());
        }
        have += got;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) = resp.parse(&buf[..have])? {
            let length = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .ok_or("a response without Content-Length")?;
            let mut left = (head + length).saturating_sub(have);
            let room = buf.len();
            while left > 0 {
                let got = stream.read(&mut buf[..left.min(room)])?;
                if got == 0 {
                    return Err("the server closed the connection mid-body".into());
                }
                left -= got;
            }
            return Ok(());
        }
        if have == buf.len() {
            return Err("a response head over 16 KiB".into());
        }
    }
}
