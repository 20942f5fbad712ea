//! Deterministic generators of topics and filters for the cross-check tests.

/// A xorshift64* generator: deterministic, no dependencies.
pub(super) struct XorShift(u64);

impl XorShift {
    pub(super) fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub(super) fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Levels used in generated topics: empty levels, `$` levels, multi-byte UTF-8.
const LEVELS: &[&str] = &[
    "a", "b", "", "$SYS", "$", "$share", "ü", "日本", "sport", "x y", "a",
];

/// Topics every cross-check includes.
pub(super) const EDGE_TOPICS: &[&str] = &[
    "/",
    "//",
    "a",
    "a/",
    "/a",
    "a/b",
    "a//b",
    "$SYS",
    "$SYS/x",
    "$SYS/monitor/Clients",
    "$",
    "$/",
    "ü",
    "日本/x",
    "a/$SYS",
    "$share/g/a",
    "sport/tennis/player1",
    "a/b/c/d/e/f",
];

/// Filters every cross-check includes (the last few are invalid on purpose).
pub(super) const EDGE_FILTERS: &[&str] = &[
    "#",
    "+",
    "+/+",
    "/",
    "/+",
    "+/",
    "/#",
    "+/#",
    "a/#",
    "a//b",
    "a/+/b",
    "$SYS/#",
    "$SYS/+",
    "$/#",
    "+/monitor/Clients",
    "$share/g/a",
    "ü/#",
    "日本/+",
    "sport/tennis/player1/#",
    "#/a",
    "a/#/b",
    "a+",
];

/// A topic name of 1 to 5 generated levels.
pub(super) fn gen_topic(rng: &mut XorShift) -> String {
    let depth = 1 + rng.below(5);
    let levels: Vec<&str> = (0..depth).map(|_| rng.pick(LEVELS)).collect();
    levels.join("/")
}

/// A filter of 1 to 5 levels with `+` and a trailing `#`, rarely a misplaced (invalid) `#`.
pub(super) fn gen_filter(rng: &mut XorShift) -> String {
    let depth = 1 + rng.below(5);
    let mut levels: Vec<&str> = Vec::with_capacity(depth);
    for i in 0..depth {
        let last = i + 1 == depth;
        let roll = rng.below(100);
        levels.push(if roll < 25 {
            "+"
        } else if (roll < 45 && last) || roll < 47 {
            // Mostly a trailing `#`; sometimes a misplaced (invalid) one.
            "#"
        } else {
            rng.pick(LEVELS)
        });
    }
    levels.join("/")
}
