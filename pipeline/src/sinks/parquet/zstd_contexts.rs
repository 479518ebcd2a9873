//! The patched zstd (`vendor/zstd`, see its README): decompressors reuse
//! pooled contexts and compressors make theirs at first use. A reused
//! context must behave exactly as a new one — no dictionary or failed
//! frame of its previous user left in it — and a lazily made compressor must
//! compress at the level it was made with.

use zstd::bulk::{Compressor, Decompressor};

fn text(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| b"<13>Oct 11 22:14:15 host sshd[42]: Failed password for root"[i % 58])
        .collect()
}

#[test]
fn a_pooled_context_forgets_its_previous_dictionary() {
    let dictionary = text(4096);
    let data = text(10_000);
    let with_dictionary = Compressor::with_dictionary(3, &dictionary)
        .unwrap()
        .compress(&data)
        .unwrap();
    let plain = zstd::bulk::compress(&data, 3).unwrap();
    // Contexts that held the dictionary go back to the pool…
    for _ in 0..8 {
        let mut d = Decompressor::with_dictionary(&dictionary).unwrap();
        assert_eq!(d.decompress(&with_dictionary, data.len()).unwrap(), data);
    }
    // …and come out of it without: a frame that needs the dictionary fails
    // as it fails in a new context, and a plain frame decodes.
    let fresh = zstd::bulk::decompress(&with_dictionary, data.len());
    let fresh = fresh.unwrap_err().to_string();
    for _ in 0..8 {
        let mut d = Decompressor::new().unwrap();
        let reused = d.decompress(&with_dictionary, data.len()).unwrap_err();
        assert_eq!(reused.to_string(), fresh);
        assert_eq!(d.decompress(&plain, data.len()).unwrap(), data);
    }
}

#[test]
fn a_context_that_met_a_corrupt_frame_decodes_the_next_one() {
    // Letters from a generator: a frame of tens of KiB to damage.
    let data: Vec<u8> = (0..100_000u32)
        .map(|i| b'a' + (i.wrapping_mul(2_654_435_761) >> 28) as u8)
        .collect();
    let mut compressor = Compressor::new(3).unwrap();
    compressor.include_checksum(true).unwrap();
    let frame = compressor.compress(&data).unwrap();
    let mut corrupt = frame.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle..middle + 64].fill(0xA5);
    // A corrupt page in one object must not poison the next reader.
    for _ in 0..8 {
        let mut d = Decompressor::new().unwrap();
        assert!(d.decompress(&corrupt, data.len()).is_err());
    }
    for _ in 0..8 {
        let mut d = Decompressor::new().unwrap();
        assert_eq!(d.decompress(&frame, data.len()).unwrap(), data);
    }
}

#[test]
fn a_compressor_made_lazily_compresses_at_its_level() {
    let data = text(200_000);
    for level in [1, 3, 19] {
        let expected = zstd::bulk::compress(&data, level).unwrap();
        assert_eq!(
            Compressor::new(level).unwrap().compress(&data).unwrap(),
            expected
        );
        let mut changed = Compressor::new(1).unwrap();
        changed.set_compression_level(level).unwrap();
        assert_eq!(changed.compress(&data).unwrap(), expected, "level {level}");
    }
    assert_ne!(
        zstd::bulk::compress(&data, 1).unwrap(),
        zstd::bulk::compress(&data, 19).unwrap()
    );
}

#[test]
fn threads_share_the_pool() {
    let data = text(50_000);
    let frame = zstd::bulk::compress(&data, 3).unwrap();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (data, frame) = (data.clone(), frame.clone());
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let mut d = Decompressor::new().unwrap();
                    assert_eq!(d.decompress(&frame, data.len()).unwrap(), data);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
}
