//! CPU sets in the kernel's two text formats.
//!
//! * list format (`cpulist`, `cpuset.cpus`, `Cpus_allowed_list`): `0-3,8,10-15`, with strides
//!   `0-15:2/4` (in each group of 4 CPUs from the start, the first 2);
//! * mask format (`cpumap`, `Cpus_allowed`): 32-bit hex groups separated by commas, most
//!   significant first; the first group may be short (`ff,ffffffff` is CPUs 0-39).

use crate::error::{Error, Result};
use std::fmt;

/// Largest CPU number accepted. The kernel's NR_CPUS tops out at 8192 today; the margin keeps
/// a typo such as `0-4000000000` from allocating gigabytes.
pub const MAX_CPU: u32 = (1 << 20) - 1;

/// A set of CPU numbers, stored as a bitmap of 64-bit words with no trailing zero words.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct CpuSet {
    words: Vec<u64>,
}

impl CpuSet {
    pub fn new() -> Self {
        CpuSet { words: Vec::new() }
    }

    /// Parse the kernel list format. Surrounding white space, NUL bytes and a final newline
    /// are ignored; empty input is the empty set.
    pub fn parse_list(input: &str) -> Result<Self> {
        let text = clean(input);
        let mut set = CpuSet::new();
        if text.is_empty() {
            return Ok(set);
        }
        let offset = input.find(text).unwrap_or(0);
        let mut position = offset;
        for item in text.split(',') {
            let fail =
                |reason: String| Error::CpuSet { input: input.to_string(), position, reason };
            parse_list_item(item, &mut set).map_err(fail)?;
            position += item.len() + 1;
        }
        Ok(set)
    }

    /// Parse the kernel mask format (comma-separated 32-bit hex groups, most significant first).
    pub fn parse_mask(input: &str) -> Result<Self> {
        let text = clean(input);
        let mut set = CpuSet::new();
        if text.is_empty() {
            return Ok(set);
        }
        let offset = input.find(text).unwrap_or(0);
        let groups: Vec<&str> = text.split(',').collect();
        let mut position = offset;
        for (index, group) in groups.iter().enumerate() {
            let fail =
                |reason: String| Error::CpuSet { input: input.to_string(), position, reason };
            if group.is_empty() || group.len() > 8 {
                return Err(fail(format!("mask group {group:?} must have 1 to 8 hex digits")));
            }
            let value = u32::from_str_radix(group, 16)
                .map_err(|_| fail(format!("mask group {group:?} is not hexadecimal")))?;
            if group.starts_with('+') {
                return Err(fail(format!("mask group {group:?} is not hexadecimal")));
            }
            let base = 32 * (groups.len() - 1 - index) as u64;
            if value != 0 && base + 31 - u64::from(value.leading_zeros()) > u64::from(MAX_CPU) {
                return Err(fail(format!("mask is wider than {} CPUs", MAX_CPU + 1)));
            }
            for bit in 0..32 {
                if value & (1 << bit) != 0 {
                    set.insert((base + bit) as u32);
                }
            }
            position += group.len() + 1;
        }
        Ok(set)
    }

    /// Parse either format: a text with a hex letter, or comma groups of exactly eight hex
    /// digits, is a mask; anything else is a list. Prefer the explicit parsers when the file's
    /// format is known.
    pub fn parse_any(input: &str) -> Result<Self> {
        let text = clean(input);
        let looks_mask = text.chars().any(|c| matches!(c, 'a'..='f' | 'A'..='F' | 'x'))
            || (text.contains(',') && text.split(',').all(|g| g.len() == 8));
        if looks_mask && !text.contains('-') {
            Self::parse_mask(input)
        } else {
            Self::parse_list(input)
        }
    }

    pub fn insert(&mut self, cpu: u32) {
        let (word, bit) = (cpu as usize / 64, cpu % 64);
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << bit;
    }

    pub fn remove(&mut self, cpu: u32) {
        let (word, bit) = (cpu as usize / 64, cpu % 64);
        if let Some(w) = self.words.get_mut(word) {
            *w &= !(1 << bit);
        }
        self.trim();
    }

    /// Insert `first..=last`, a 64-bit word at a time.
    pub fn insert_range(&mut self, first: u32, last: u32) {
        if first > last {
            return;
        }
        let (first_word, last_word) = (first as usize / 64, last as usize / 64);
        if self.words.len() <= last_word {
            self.words.resize(last_word + 1, 0);
        }
        for (index, word) in self.words[first_word..=last_word].iter_mut().enumerate() {
            let index = first_word + index;
            let low = if index == first_word { first % 64 } else { 0 };
            let high = if index == last_word { last % 64 } else { 63 };
            *word |= (u64::MAX >> (63 - high)) & (u64::MAX << low);
        }
    }

    pub fn contains(&self, cpu: u32) -> bool {
        let (word, bit) = (cpu as usize / 64, cpu % 64);
        self.words.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    pub fn first(&self) -> Option<u32> {
        self.iter().next()
    }

    pub fn last(&self) -> Option<u32> {
        let index = self.words.len().checked_sub(1)?;
        let word = self.words[index];
        Some(index as u32 * 64 + 63 - word.leading_zeros())
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(index, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros();
                rest &= rest - 1;
                Some(index as u32 * 64 + bit)
            })
        })
    }

    pub fn union(&self, other: &CpuSet) -> CpuSet {
        let n = self.words.len().max(other.words.len());
        let words = (0..n).map(|i| self.word(i) | other.word(i)).collect();
        CpuSet { words }
    }

    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        let n = self.words.len().min(other.words.len());
        let mut set = CpuSet { words: (0..n).map(|i| self.word(i) & other.word(i)).collect() };
        set.trim();
        set
    }

    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        let mut set = CpuSet {
            words: (0..self.words.len()).map(|i| self.word(i) & !other.word(i)).collect(),
        };
        set.trim();
        set
    }

    pub fn symmetric_difference(&self, other: &CpuSet) -> CpuSet {
        let n = self.words.len().max(other.words.len());
        let mut set = CpuSet { words: (0..n).map(|i| self.word(i) ^ other.word(i)).collect() };
        set.trim();
        set
    }

    pub fn is_subset(&self, other: &CpuSet) -> bool {
        (0..self.words.len()).all(|i| self.word(i) & !other.word(i) == 0)
    }

    pub fn is_disjoint(&self, other: &CpuSet) -> bool {
        self.intersection(other).is_empty()
    }

    /// The shortest list form, as the kernel writes it: every run of two or more CPUs as `a-b`.
    pub fn to_list(&self) -> String {
        let mut out = String::new();
        let mut cpus = self.iter().peekable();
        while let Some(first) = cpus.next() {
            let mut last = first;
            while cpus.peek() == Some(&(last + 1)) {
                last = cpus.next().unwrap_or(last);
            }
            if !out.is_empty() {
                out.push(',');
            }
            if first == last {
                out.push_str(&first.to_string());
            } else {
                out.push_str(&format!("{first}-{last}"));
            }
        }
        out
    }

    /// Mask form: 32-bit groups, most significant first, the first group unpadded; the empty
    /// set is `0`.
    pub fn to_mask(&self) -> String {
        let groups = self.words.len() * 2;
        let group = |i: usize| (self.words[i / 2] >> (32 * (i % 2))) as u32;
        let top = (0..groups).rev().find(|&i| group(i) != 0);
        let Some(top) = top else { return "0".to_string() };
        let mut out = format!("{:x}", group(top));
        for i in (0..top).rev() {
            out.push_str(&format!(",{:08x}", group(i)));
        }
        out
    }

    /// Raw 64-bit words, CPU 0 in bit 0 of word 0 (the layout of `cpu_set_t`).
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    pub fn from_words(words: Vec<u64>) -> Self {
        let mut set = CpuSet { words };
        set.trim();
        set
    }

    fn word(&self, index: usize) -> u64 {
        self.words.get(index).copied().unwrap_or(0)
    }

    fn trim(&mut self) {
        while self.words.last() == Some(&0) {
            self.words.pop();
        }
    }
}

impl FromIterator<u32> for CpuSet {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        let mut set = CpuSet::new();
        for cpu in iter {
            set.insert(cpu);
        }
        set
    }
}

impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_list())
    }
}

impl fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CpuSet({:?})", self.to_list())
    }
}

/// Strip what sysfs files carry around the value: white space, newlines and (in some
/// captured trees) NUL bytes.
fn clean(input: &str) -> &str {
    input.trim_matches(|c: char| c.is_whitespace() || c == '\0')
}

fn parse_cpu(text: &str) -> std::result::Result<u32, String> {
    if text.is_empty() {
        return Err("missing CPU number".to_string());
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not a CPU number"));
    }
    let cpu: u64 = text.parse().map_err(|_| format!("{text:?} is too large"))?;
    if cpu > u64::from(MAX_CPU) {
        return Err(format!("CPU {cpu} exceeds the supported maximum {MAX_CPU}"));
    }
    Ok(cpu as u32)
}

fn parse_list_item(item: &str, set: &mut CpuSet) -> std::result::Result<(), String> {
    if item.is_empty() {
        return Err("empty item between commas".to_string());
    }
    let (range, stride) = match item.split_once(':') {
        Some((range, stride)) => (range, Some(stride)),
        None => (item, None),
    };
    let (first, last) = match range.split_once('-') {
        Some((a, b)) => (parse_cpu(a)?, parse_cpu(b)?),
        None if stride.is_some() => return Err(format!("stride needs a range in {item:?}")),
        None => {
            let cpu = parse_cpu(range)?;
            (cpu, cpu)
        }
    };
    if first > last {
        return Err(format!("range {item:?} runs backwards"));
    }
    let Some(stride) = stride else {
        set.insert_range(first, last);
        return Ok(());
    };
    let (used, group) = stride
        .split_once('/')
        .ok_or_else(|| format!("stride {stride:?} must be used/group, as in 0-15:2/4"))?;
    let (used, group) = (parse_cpu(used)?, parse_cpu(group)?);
    if used == 0 || group == 0 || used > group {
        return Err(format!("stride {stride:?} needs 1 <= used <= group"));
    }
    let mut base = first;
    while base <= last {
        for cpu in base..(base + used).min(last + 1) {
            set.insert(cpu);
        }
        base = match base.checked_add(group) {
            Some(next) => next,
            None => break,
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> Vec<u32> {
        CpuSet::parse_list(text).unwrap().iter().collect()
    }

    #[test]
    fn list_forms() {
        assert_eq!(list(""), Vec::<u32>::new());
        assert_eq!(list("\n"), Vec::<u32>::new());
        assert_eq!(list("0-3\n"), vec![0, 1, 2, 3]);
        assert_eq!(list("0,2-4,7"), vec![0, 2, 3, 4, 7]);
        assert_eq!(list("0-15:2/4"), vec![0, 1, 4, 5, 8, 9, 12, 13]);
        assert_eq!(list("1023"), vec![1023]);
        assert_eq!(list("0-4095").len(), 4096);
    }

    #[test]
    fn list_errors_say_where() {
        let err = CpuSet::parse_list("1,2abc,3").unwrap_err().to_string();
        assert!(err.contains("at character 2"), "{err}");
        assert!(err.contains("2abc"), "{err}");
        for bad in ["3-1", "-1", "1,,2", "0-15:0/4", "0-15:5/4", "1:2/4", "4294967296"] {
            assert!(CpuSet::parse_list(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn masks() {
        let set = CpuSet::parse_mask("00000000,0000ffff").unwrap();
        assert_eq!(set.to_list(), "0-15");
        let set = CpuSet::parse_mask("ff,ffffffff\n").unwrap();
        assert_eq!(set.to_list(), "0-39");
        assert_eq!(set.to_mask(), "ff,ffffffff");
        assert_eq!(CpuSet::new().to_mask(), "0");
        assert!(CpuSet::parse_mask("123456789").is_err());
        assert!(CpuSet::parse_mask("ff,,ff").is_err());
        assert!(CpuSet::parse_mask("fg").is_err());
    }

    #[test]
    fn algebra() {
        let a = CpuSet::parse_list("0-7").unwrap();
        let b = CpuSet::parse_list("4-200").unwrap();
        assert_eq!(a.intersection(&b).to_list(), "4-7");
        assert_eq!(a.difference(&b).to_list(), "0-3");
        assert_eq!(b.difference(&a).to_list(), "8-200");
        assert_eq!(a.union(&b).to_list(), "0-200");
        assert_eq!(a.symmetric_difference(&b).to_list(), "0-3,8-200");
        assert_eq!(b.last(), Some(200));
        assert!(CpuSet::parse_list("4-5").unwrap().is_subset(&a));
    }

    #[test]
    fn ranges_a_word_at_a_time() {
        for (first, last) in [(0, 0), (0, 63), (1, 64), (63, 64), (5, 200), (64, 127), (100, 1000)]
        {
            let mut set = CpuSet::new();
            set.insert_range(first, last);
            assert_eq!(set.iter().collect::<Vec<_>>(), (first..=last).collect::<Vec<_>>());
        }
    }
}
