//! Which FAISS index fits a gallery, and what it costs per template.

/// Float vectors Osprey keeps in memory before it switches to a compressed
/// index: 2 GiB (4M templates of 128-d, 1M of 512-d).
pub const FLOAT_INDEX_BUDGET_BYTES: usize = 2 << 30;

/// Bytes of code per template Osprey's automatic product quantiser stays
/// within (one byte per sub-quantiser).
const MAX_PQ_CODE_BYTES: usize = 64;

/// Candidates re-ranked by exact score when a compressed index does not
/// say otherwise (see [`default_rerank`]).
pub const DEFAULT_RERANK: usize = 100;

/// The index factory string Osprey picks for `n` templates of width `dim`
/// when the user names none.
///
/// * below 20k templates: `Flat` — exact, and a search costs well under a
///   millisecond per thousand templates;
/// * while the float vectors fit in [`FLOAT_INDEX_BUDGET_BYTES`]:
///   `IVF<nlist>,Flat` with `nlist ≈ 4√n` (a power of two, at least 39
///   training points per list as FAISS recommends);
/// * beyond: `IVF<nlist>,PQ<m>np` with `m = dim/4` sub-quantisers of one byte
///   each, at most 64 (16× less memory than float vectors at 128-d, 32× at
///   512-d); such galleries re-rank their top candidates by exact score
///   from vectors kept on local disk ([`default_rerank`]), which recovers
///   the recall the codes lose.
pub fn auto_factory(n: usize, dim: usize) -> String {
    if n < 20_000 {
        return "Flat".to_string();
    }
    let nlist = nlist_for(n);
    if n.saturating_mul(dim * 4) <= FLOAT_INDEX_BUDGET_BYTES {
        format!("IVF{nlist},Flat")
    } else {
        let m = (1..=(dim / 4).clamp(1, MAX_PQ_CODE_BYTES)).rev().find(|m| dim % m == 0).unwrap_or(1);
        // `np`: no polysemous training, which serves only Hamming-distance
        // filtering (not used here) and takes most of the build time.
        format!("IVF{nlist},PQ{m}np")
    }
}

/// Whether an index factory stores lossy codes (product or additive
/// quantisers, 4-bit scalar codes, binary sketches) rather than floats
/// or near-exact 8/16-bit scalars.
pub fn is_compressed(factory: &str) -> bool {
    factory.split(',').map(str::trim).any(|part| {
        ["PQ", "OPQ", "RQ", "LSQ", "PRQ", "PLSQ", "RaBitQ", "LSH"].iter().any(|p| part.starts_with(p)) || part == "SQ4"
    })
}

/// How many candidates a gallery of index `factory` re-ranks by exact score
/// unless told: [`DEFAULT_RERANK`] for compressed indexes, none for the others
/// (their scores are exact already).
pub fn default_rerank(factory: &str) -> Option<usize> {
    is_compressed(factory).then_some(DEFAULT_RERANK)
}

fn nlist_for(n: usize) -> usize {
    let target = 4.0 * (n as f64).sqrt();
    let mut nlist = (target.log2().round() as u32).clamp(8, 16);
    while nlist > 8 && (1usize << nlist) * 39 > n {
        nlist -= 1;
    }
    1 << nlist
}

/// The `nprobe` Osprey uses for an IVF index with `nlist` lists unless told:
/// enough lists that recall@10 stays above ~0.95 on clustered face embeddings.
pub fn default_nprobe(factory: &str) -> Option<usize> {
    let nlist = ivf_lists(factory)?;
    Some((nlist / 32).clamp(16, 256).min(nlist))
}

pub(crate) fn ivf_lists(factory: &str) -> Option<usize> {
    factory.split(',').find_map(|part| {
        let rest = part.trim().strip_prefix("IVF")?;
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().ok()
    })
}

/// Estimated resident bytes per template of a factory string at width `dim`:
/// the vector codes plus FAISS's 8-byte id, plus graph links for HNSW. The
/// id-map entry Osprey keeps (template and subject ids) is not included.
pub fn bytes_per_template_estimate(factory: &str, dim: usize) -> Option<usize> {
    let id = 8;
    let mut code = None;
    let mut extra = 0;
    for part in factory.split(',').map(str::trim) {
        if part == "Flat" || part == "IDMap" || part == "IDMap2" {
            code.get_or_insert(4 * dim);
        } else if let Some(m) = part.strip_prefix("HNSW") {
            let m: usize = m.split('_').next()?.parse().ok()?;
            // Level 0 keeps 2M neighbours, upper levels add ~1/M of that again.
            extra += 2 * m * 4 + 2 * 4;
            code = Some(4 * dim);
        } else if let Some(m) = part.strip_prefix("PQ") {
            let m: usize = m.split(['x', 'f', 'n']).next()?.parse().ok()?;
            code = Some(m);
        } else if part == "SQ8" {
            code = Some(dim);
        } else if part == "SQ4" {
            code = Some(dim.div_ceil(2));
        } else if part == "SQfp16" {
            code = Some(2 * dim);
        } else if part.starts_with("IVF") || part.starts_with("PCA") || part.starts_with("OPQ") {
            continue;
        } else {
            return None;
        }
    }
    Some(code? + id + extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_flat_small_and_ivf_large() {
        assert_eq!(auto_factory(500, 128), "Flat");
        assert_eq!(auto_factory(200_000, 128), "IVF2048,Flat");
        assert_eq!(auto_factory(1_000_000, 512), "IVF4096,Flat");
        assert_eq!(auto_factory(10_000_000, 128), "IVF16384,PQ32np");
        // Past the float budget: 2M 512-d templates are 4 GB as floats.
        assert_eq!(auto_factory(2_000_000, 512), "IVF4096,PQ64np");
        assert_eq!(auto_factory(3_000_000, 128), "IVF8192,Flat");
        assert_eq!(default_rerank("IVF4096,PQ32"), Some(DEFAULT_RERANK));
        assert_eq!(default_rerank("OPQ32,IVF4096,PQ32"), Some(DEFAULT_RERANK));
        assert_eq!(default_rerank("IVF4096,Flat"), None);
        assert_eq!(default_rerank("IVF1024,SQ8"), None);
        // Never fewer than 39 training points per list.
        let f = auto_factory(20_000, 128);
        assert!(ivf_lists(&f).unwrap() * 39 <= 20_000, "{f}");
    }

    #[test]
    fn estimates_memory() {
        assert_eq!(bytes_per_template_estimate("Flat", 128), Some(520));
        assert_eq!(bytes_per_template_estimate("IVF4096,PQ64", 128), Some(72));
        assert_eq!(bytes_per_template_estimate("HNSW32", 128), Some(512 + 8 + 264));
        assert_eq!(bytes_per_template_estimate("IVF1024,SQ8", 512), Some(520));
        assert_eq!(bytes_per_template_estimate("LSH", 128), None);
        assert_eq!(default_nprobe("IVF4096,Flat"), Some(128));
        assert_eq!(default_nprobe("Flat"), None);
    }
}
