//! All-reduce throughput of toucan-worker's collectives (libtorch's Gloo through the worker's
//! c10d bridge), against a plain loopback TCP exchange of the same bytes: for two ranks, what
//! an all-reduce must at least move is each rank's buffer to the other and back.
//!
//! One process per rank, started by `bench/training-vs-ddp`:
//!
//! ```text
//! allreduce gloo   RANK WORLD PORT MIB[,MIB...] ITERATIONS
//! allreduce socket RANK 2     PORT MIB[,MIB...] ITERATIONS
//! ```
//!
//! Rank 0 prints one JSON line per size: `{"mode", "mib", "seconds"}`, the median time of one
//! operation over ITERATIONS after 3 warm-up ones.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tch::{Kind, Tensor};
use toucan_worker::collectives::ProcessGroup;

const WARMUP: usize = 3;

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("allreduce: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<(), String> {
    let [mode, rank, world, port, sizes, iterations] = args.as_slice() else {
        return Err("usage: allreduce gloo|socket RANK WORLD PORT MIB[,MIB...] ITERATIONS".into());
    };
    let number = |name: &str, text: &str| {
        text.parse::<usize>()
            .map_err(|_| format!("{name} {text:?} is not a whole number"))
    };
    let (rank, world) = (number("RANK", rank)?, number("WORLD", world)?);
    let port = u16::try_from(number("PORT", port)?).map_err(|e| e.to_string())?;
    let iterations = number("ITERATIONS", iterations)?.max(1);
    let sizes = sizes
        .split(',')
        .map(|s| number("MIB", s))
        .collect::<Result<Vec<_>, _>>()?;
    let mut op: Box<dyn FnMut(usize) -> Result<(), String>> = match mode.as_str() {
        "gloo" => {
            tch::set_num_threads(1);
            let mut group =
                ProcessGroup::join("127.0.0.1", port, rank, world, Duration::from_secs(60))
                    .map_err(|e| e.to_string())?;
            let mut buffers = std::collections::HashMap::new();
            Box::new(move |bytes| {
                let tensor = buffers.entry(bytes).or_insert_with(|| {
                    Tensor::ones([(bytes / 4) as i64], (Kind::Float, tch::Device::Cpu))
                });
                group
                    .all_reduce_sum(std::slice::from_mut(tensor))
                    .map_err(|e| e.to_string())
            })
        }
        "socket" if world == 2 => {
            let stream = if rank == 0 {
                let listener = TcpListener::bind(("127.0.0.1", port)).map_err(|e| e.to_string())?;
                listener.accept().map_err(|e| e.to_string())?.0
            } else {
                connect(port)?
            };
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            Box::new(move |bytes| exchange(&stream, bytes))
        }
        _ => {
            return Err(format!(
                "mode {mode:?} with {world} ranks: use gloo, or socket with 2"
            ));
        }
    };
    for mib in sizes {
        let bytes = mib << 20;
        let mut times = Vec::with_capacity(iterations);
        for i in 0..WARMUP + iterations {
            let started = Instant::now();
            op(bytes)?;
            if i >= WARMUP {
                times.push(started.elapsed().as_secs_f64());
            }
        }
        times.sort_by(f64::total_cmp);
        if rank == 0 {
            let line =
                serde_json::json!({"mode": mode, "mib": mib, "seconds": times[times.len() / 2]});
            println!("{line}");
        }
    }
    Ok(())
}

/// Rank 1 connects once rank 0 listens.
fn connect(port: u16) -> Result<TcpStream, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > deadline => return Err(e.to_string()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Sends `bytes` to the peer while receiving as many from it: the data a two-rank all-reduce
/// moves.
fn exchange(stream: &TcpStream, bytes: usize) -> Result<(), String> {
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let chunk = vec![1u8; 1 << 20];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            writer.write_all(&chunk[..n])?;
            left -= n;
        }
        writer.flush()
    });
    let mut reader = stream;
    let mut buffer = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buffer.len());
        reader
            .read_exact(&mut buffer[..n])
            .map_err(|e| e.to_string())?;
        left -= n;
    }
    sender
        .join()
        .map_err(|_| "the sending thread panicked".to_string())?
        .map_err(|e| e.to_string())
}
