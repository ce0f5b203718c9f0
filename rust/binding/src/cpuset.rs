use crate::errors::IntoPyResult;
use kata_numa_core::CpuSet;
use pyo3::basic::CompareOp;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

/// An immutable set of CPU numbers (or NUMA node numbers: the kernel writes both alike).
#[pyclass(name = "CpuSet", module = "kata_numa._native", frozen)]
#[derive(Clone)]
pub struct PyCpuSet(pub CpuSet);

impl From<CpuSet> for PyCpuSet {
    fn from(set: CpuSet) -> Self {
        PyCpuSet(set)
    }
}

#[pymethods]
impl PyCpuSet {
    /// `CpuSet()`, `CpuSet([0, 1, 5])` or `CpuSet("0-3,8")` (kernel list format).
    #[new]
    #[pyo3(signature = (cpus = None))]
    fn new(cpus: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let Some(cpus) = cpus else { return Ok(PyCpuSet(CpuSet::new())) };
        if let Ok(text) = cpus.cast::<PyString>() {
            return CpuSet::parse_list(&text.to_cow()?).py_err().map(PyCpuSet);
        }
        let mut set = CpuSet::new();
        for item in cpus.try_iter()? {
            let cpu: i64 = item?.extract()?;
            if !(0..=i64::from(kata_numa_core::cpuset::MAX_CPU)).contains(&cpu) {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "CPU {cpu} is outside 0..={}",
                    kata_numa_core::cpuset::MAX_CPU
                )));
            }
            set.insert(cpu as u32);
        }
        Ok(PyCpuSet(set))
    }

    #[staticmethod]
    fn parse_list(text: &str) -> PyResult<Self> {
        CpuSet::parse_list(text).py_err().map(PyCpuSet)
    }

    #[staticmethod]
    fn parse_mask(text: &str) -> PyResult<Self> {
        CpuSet::parse_mask(text).py_err().map(PyCpuSet)
    }

    fn to_list(&self) -> String {
        self.0.to_list()
    }

    fn to_mask(&self) -> String {
        self.0.to_mask()
    }

    fn first(&self) -> Option<u32> {
        self.0.first()
    }

    fn last(&self) -> Option<u32> {
        self.0.last()
    }

    fn issubset(&self, other: &PyCpuSet) -> bool {
        self.0.is_subset(&other.0)
    }

    fn isdisjoint(&self, other: &PyCpuSet) -> bool {
        self.0.is_disjoint(&other.0)
    }

    fn __str__(&self) -> String {
        self.0.to_list()
    }

    fn __repr__(&self) -> String {
        format!("CpuSet('{}')", self.0.to_list())
    }

    fn __len__(&self) -> usize {
        self.0.len()
    }

    fn __bool__(&self) -> bool {
        !self.0.is_empty()
    }

    fn __contains__(&self, cpu: i64) -> bool {
        u32::try_from(cpu).is_ok_and(|c| self.0.contains(c))
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let cpus: Vec<u32> = slf.0.iter().collect();
        Ok(cpus.into_pyobject(py)?.try_iter()?.into_any().unbind())
    }

    fn __or__(&self, other: &PyCpuSet) -> PyCpuSet {
        PyCpuSet(self.0.union(&other.0))
    }

    fn __and__(&self, other: &PyCpuSet) -> PyCpuSet {
        PyCpuSet(self.0.intersection(&other.0))
    }

    fn __sub__(&self, other: &PyCpuSet) -> PyCpuSet {
        PyCpuSet(self.0.difference(&other.0))
    }

    fn __xor__(&self, other: &PyCpuSet) -> PyCpuSet {
        PyCpuSet(self.0.symmetric_difference(&other.0))
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let Ok(other) = other.extract::<PyRef<'_, PyCpuSet>>() else {
            return Ok(py.NotImplemented());
        };
        let (a, b) = (&self.0, &other.0);
        let result = match op {
            CompareOp::Eq => a == b,
            CompareOp::Ne => a != b,
            CompareOp::Le => a.is_subset(b),
            CompareOp::Lt => a.is_subset(b) && a != b,
            CompareOp::Ge => b.is_subset(a),
            CompareOp::Gt => b.is_subset(a) && a != b,
        };
        Ok(pyo3::types::PyBool::new(py, result).to_owned().into_any().unbind())
    }

    fn __hash__(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        self.0.hash(&mut hasher);
        hasher.finish()
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let args = PyTuple::new(py, [slf.get().0.to_list()])?;
        Ok((slf.get_type().into_any(), args))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCpuSet>()
}
