//! A preallocated evaluator for small feed-forward policy graphs.
//!
//! tract runs any graph, but it allocates every node's output tensor on every run
//! (32–81 allocations per step for our exported networks, see BENCHMARKS.md), and a
//! control loop wants none. The graphs reflex exports are a short chain of a dozen
//! operators on one observation, so at load time [`Plan::compile`] turns a graph
//! made only of the operators below into a list of steps over buffers allocated
//! once; [`Plan::run`] then touches no allocator at all.
//!
//! Supported, for a batch of one (`obs` is `[1, obs_dim]`): `Gemm` and `MatMul`
//! with constant weights, `Relu`, `Tanh`, `Sigmoid`, `LayerNormalization` over the
//! last axis, `ReduceMean` over the last axis, the broadcasting element-wise `Add`,
//! `Sub`, `Mul`, `Div`, `Min`, `Max`, and `Identity`; and for recurrent policies
//! (several inputs and outputs, [`Plan::compile_io`]) `Concat` on the last axis,
//! `Unsqueeze`/`Squeeze` with constant axes, and a one-step forward `LSTM`
//! (sequence length 1, default activations, no peepholes, clip or coupled gates). Anything else (another
//! operator, an attribute we do not model, a broadcast that is not "same shape or
//! one value", external data) makes `compile` return `None`, and the policy runs on
//! tract. tract also remains the validator: [`crate::policy::Policy`] only uses a
//! plan after tract has checked the graph, and only if the plan agrees with tract
//! on a set of probe observations.

use std::collections::HashMap;

use tract_onnx::pb;

/// ONNX `TensorProto.DataType` codes this module reads.
const FLOAT: i32 = 1;
const INT64: i32 = 7;

/// An operand: a buffer filled by an earlier step, or a constant of the graph.
#[derive(Debug, Clone, Copy)]
enum Src {
    Buf(usize),
    Const(usize),
}

#[derive(Debug, Clone, Copy)]
enum Unary {
    Relu,
    Tanh,
    Sigmoid,
    Identity,
}

#[derive(Debug, Clone, Copy)]
enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
}

impl Binary {
    #[inline(always)]
    fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
            // ONNX Min/Max propagate NaN (like NumPy's minimum/maximum); the
            // policy loader refuses NaN outputs anyway, but keep the semantics.
            Binary::Min => {
                if a.is_nan() || b.is_nan() {
                    f32::NAN
                } else {
                    a.min(b)
                }
            }
            Binary::Max => {
                if a.is_nan() || b.is_nan() {
                    f32::NAN
                } else {
                    a.max(b)
                }
            }
        }
    }
}

/// One step of the plan; `out` is always a buffer index.
#[derive(Debug)]
enum Step {
    /// `out = x · W + bias` with `W` stored `[k][n]` (row `i` multiplies `x[i]`)
    /// and `alpha` / `beta` folded in at compile time.
    Dense {
        x: Src,
        w: usize,
        bias: Option<usize>,
        k: usize,
        n: usize,
        out: usize,
    },
    Unary {
        op: Unary,
        x: Src,
        out: usize,
    },
    /// `out[i] = a[i or 0] ∘ b[i or 0]`: each operand has the output's length or one
    /// value.
    Binary {
        op: Binary,
        a: Src,
        b: Src,
        out: usize,
    },
    /// Normalizes the whole row, then scales and shifts.
    LayerNorm {
        x: Src,
        scale: usize,
        bias: Option<usize>,
        epsilon: f32,
        out: usize,
    },
    /// The row's mean into a one-value buffer.
    Mean {
        x: Src,
        out: usize,
    },
    /// The parts side by side.
    Concat {
        parts: Vec<Src>,
        out: usize,
    },
    /// One LSTM step (ONNX gate order i, o, f, c): `gates = x·W + h·R + b`, then
    /// c' = σ(f)·c + σ(i)·tanh(c̃), h' = σ(o)·tanh(c') into `out` (h') and `out_c`.
    Lstm {
        x: Src,
        h: Src,
        c: Src,
        /// `[inputs][4H]`.
        w: usize,
        /// `[H][4H]`.
        r: usize,
        /// `[4H]`: the input and recurrent biases summed.
        bias: usize,
        inputs: usize,
        hidden: usize,
        gates: usize,
        out: usize,
        out_c: usize,
    },
}

/// A compiled graph: steps over buffers that are allocated once.
#[derive(Debug)]
pub struct Plan {
    consts: Vec<Vec<f32>>,
    bufs: Vec<Vec<f32>>,
    steps: Vec<Step>,
    /// Input buffers, in the order `compile_io` named them.
    inputs: Vec<usize>,
    /// Outputs and their lengths, in the order `compile_io` named them.
    outputs: Vec<(Src, usize)>,
}

/// A value while compiling: where it lives and its shape (batch of one).
#[derive(Debug, Clone)]
struct Value {
    src: Src,
    shape: Vec<usize>,
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// NumPy broadcasting of two shapes, `None` if they do not broadcast.
fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        let pad = rank - s.len();
        if i < pad {
            1
        } else {
            s[i - pad]
        }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// The float data of an initializer or a `value` attribute, with its dims.
fn float_tensor(t: &pb::TensorProto) -> Option<(Vec<usize>, Vec<f32>)> {
    if t.data_type != FLOAT || !t.external_data.is_empty() || t.data_location.unwrap_or(0) != 0 {
        return None;
    }
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<_>>()?;
    let data: Vec<f32> = if !t.raw_data.is_empty() {
        if !t.raw_data.chunks_exact(4).remainder().is_empty() {
            return None;
        }
        t.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        t.float_data.clone()
    };
    (data.len() == numel(&dims)).then_some((dims, data))
}

fn int_tensor(t: &pb::TensorProto) -> Option<Vec<i64>> {
    if t.data_type != INT64 || !t.external_data.is_empty() || t.data_location.unwrap_or(0) != 0 {
        return None;
    }
    if !t.raw_data.is_empty() {
        if !t.raw_data.chunks_exact(8).remainder().is_empty() {
            return None;
        }
        Some(
            t.raw_data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        )
    } else {
        Some(t.int64_data.clone())
    }
}

fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_int(node: &pb::NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}

fn attr_float(node: &pb::NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f)
}

/// Whether `axis` (negative counts from the end) is the last axis of a rank-`rank`
/// tensor.
fn is_last_axis(axis: i64, rank: usize) -> bool {
    let rank = rank as i64;
    axis == rank - 1 || axis == -1
}

/// The compiler's state: named values, constants, buffers and steps so far.
struct Compiler {
    values: HashMap<String, Value>,
    consts: Vec<Vec<f32>>,
    /// int64 initializers (ReduceMean's axes from opset 18 on).
    ints: HashMap<String, Vec<i64>>,
    /// Buffer lengths (the buffers are allocated at the end).
    bufs: Vec<usize>,
    steps: Vec<Step>,
}

impl Compiler {
    fn new_const(&mut self, data: Vec<f32>) -> usize {
        self.consts.push(data);
        self.consts.len() - 1
    }

    fn new_buf(&mut self, len: usize) -> usize {
        self.bufs.push(len);
        self.bufs.len() - 1
    }

    fn value(&self, node: &pb::NodeProto, i: usize) -> Option<&Value> {
        let name = node.input.get(i)?;
        if name.is_empty() {
            return None;
        }
        self.values.get(name)
    }

    fn constant(&self, node: &pb::NodeProto, i: usize) -> Option<(Vec<usize>, &[f32])> {
        let v = self.value(node, i)?;
        match v.src {
            Src::Const(c) => Some((v.shape.clone(), &self.consts[c])),
            Src::Buf(_) => None,
        }
    }

    fn define(&mut self, node: &pb::NodeProto, src: Src, shape: Vec<usize>) -> Option<()> {
        let [name] = node.output.as_slice() else {
            return None;
        };
        self.values.insert(name.clone(), Value { src, shape });
        Some(())
    }

    /// Compiles one node, or `None` if it is not supported.
    fn node(&mut self, node: &pb::NodeProto) -> Option<()> {
        if !node.domain.is_empty() && node.domain != "ai.onnx" {
            return None;
        }
        match node.op_type.as_str() {
            "Gemm" => self.gemm(node),
            "MatMul" => self.matmul(node),
            "Relu" => self.unary(node, Unary::Relu),
            "Tanh" => self.unary(node, Unary::Tanh),
            "Sigmoid" => self.unary(node, Unary::Sigmoid),
            "Identity" => self.unary(node, Unary::Identity),
            "Add" => self.binary(node, Binary::Add),
            "Sub" => self.binary(node, Binary::Sub),
            "Mul" => self.binary(node, Binary::Mul),
            "Div" => self.binary(node, Binary::Div),
            "Min" => self.variadic(node, Binary::Min),
            "Max" => self.variadic(node, Binary::Max),
            "LayerNormalization" => self.layer_norm(node),
            "ReduceMean" => self.reduce_mean(node),
            "Concat" => self.concat(node),
            "Unsqueeze" => self.reshape_axes(node, true),
            "Squeeze" => self.reshape_axes(node, false),
            "LSTM" => self.lstm(node),
            _ => None,
        }
    }

    /// `Concat` along the last axis of values whose other dims are all 1.
    fn concat(&mut self, node: &pb::NodeProto) -> Option<()> {
        let values: Vec<Value> = (0..node.input.len())
            .map(|i| self.value(node, i).cloned())
            .collect::<Option<_>>()?;
        let rank = values.first()?.shape.len();
        let rowlike =
            |v: &Value| v.shape.len() == rank && v.shape[..rank - 1].iter().all(|&d| d == 1);
        if rank == 0 || !values.iter().all(rowlike) {
            return None;
        }
        if !is_last_axis(attr(node, "axis")?.i, rank) {
            return None;
        }
        let width: usize = values.iter().map(|v| v.shape[rank - 1]).sum();
        let out = self.new_buf(width);
        self.steps.push(Step::Concat {
            parts: values.iter().map(|v| v.src).collect(),
            out,
        });
        let mut shape = vec![1; rank - 1];
        shape.push(width);
        self.define(node, Src::Buf(out), shape)
    }

    /// `Unsqueeze` (insert) or `Squeeze` (remove) unit axes named by a constant
    /// int64 input (opset 13 on): only the shape changes, the data is shared.
    fn reshape_axes(&mut self, node: &pb::NodeProto, insert: bool) -> Option<()> {
        let v = self.value(node, 0)?.clone();
        let axes = self.ints.get(node.input.get(1)?)?.clone();
        let out_rank = if insert {
            v.shape.len() + axes.len()
        } else {
            v.shape.len().checked_sub(axes.len())?
        };
        let full_rank = if insert { out_rank } else { v.shape.len() } as i64;
        let mut norm: Vec<usize> = axes
            .iter()
            .map(|&a| {
                let a = if a < 0 { a + full_rank } else { a };
                (0..full_rank).contains(&a).then_some(a as usize)
            })
            .collect::<Option<_>>()?;
        norm.sort_unstable();
        norm.dedup();
        if norm.len() != axes.len() {
            return None;
        }
        let shape = if insert {
            let mut rest = v.shape.iter();
            (0..out_rank)
                .map(|i| {
                    if norm.contains(&i) {
                        Some(1)
                    } else {
                        rest.next().copied()
                    }
                })
                .collect::<Option<Vec<_>>>()?
        } else {
            if norm.iter().any(|&i| v.shape[i] != 1) {
                return None;
            }
            v.shape
                .iter()
                .enumerate()
                .filter(|(i, _)| !norm.contains(i))
                .map(|(_, &d)| d)
                .collect()
        };
        self.define(node, v.src, shape)
    }

    /// A forward `LSTM` over one step of a batch of one.
    fn lstm(&mut self, node: &pb::NodeProto) -> Option<()> {
        for a in &node.attribute {
            let fine = match a.name.as_str() {
                "hidden_size" => true,
                "direction" => a.s == b"forward",
                "layout" | "input_forget" => a.i == 0,
                _ => false,
            };
            if !fine {
                return None;
            }
        }
        let hidden = usize::try_from(attr(node, "hidden_size")?.i).ok()?;
        let optional = |i: usize| node.input.get(i).is_some_and(|n| !n.is_empty());
        // sequence_lens and peepholes are not modeled.
        if optional(4) || optional(7) {
            return None;
        }
        let x = self.value(node, 0)?.clone();
        let inputs = match x.shape.as_slice() {
            [1, 1, i] => *i,
            _ => return None,
        };
        let (w_shape, w) = self.constant(node, 1)?;
        let (r_shape, r) = self.constant(node, 2)?;
        if w_shape != [1, 4 * hidden, inputs] || r_shape != [1, 4 * hidden, hidden] {
            return None;
        }
        // Transposed to [k][4H] for `dense`.
        let transpose = |m: &[f32], k: usize| -> Vec<f32> {
            let mut t = vec![0.0; k * 4 * hidden];
            for row in 0..4 * hidden {
                for col in 0..k {
                    t[col * 4 * hidden + row] = m[row * k + col];
                }
            }
            t
        };
        let (w, r) = (transpose(w, inputs), transpose(r, hidden));
        let bias = if optional(3) {
            let (b_shape, b) = self.constant(node, 3)?;
            if b_shape != [1, 8 * hidden] {
                return None;
            }
            (0..4 * hidden).map(|j| b[j] + b[4 * hidden + j]).collect()
        } else {
            vec![0.0; 4 * hidden]
        };
        let mut state = |i: usize| -> Option<Src> {
            if !optional(i) {
                return Some(Src::Const(self.new_const(vec![0.0; hidden])));
            }
            let v = self.value(node, i)?;
            (v.shape == [1, 1, hidden]).then_some(v.src)
        };
        let (h, c) = (state(5)?, state(6)?);
        let (w, r, bias) = (self.new_const(w), self.new_const(r), self.new_const(bias));
        let (gates, out, out_c) = (
            self.new_buf(4 * hidden),
            self.new_buf(hidden),
            self.new_buf(hidden),
        );
        self.steps.push(Step::Lstm {
            x: x.src,
            h,
            c,
            w,
            r,
            bias,
            inputs,
            hidden,
            gates,
            out,
            out_c,
        });
        let outputs = [
            (Src::Buf(out), vec![1, 1, 1, hidden]),
            (Src::Buf(out), vec![1, 1, hidden]),
            (Src::Buf(out_c), vec![1, 1, hidden]),
        ];
        if node.output.len() > 3 {
            return None;
        }
        for (name, (src, shape)) in node.output.iter().zip(outputs) {
            if !name.is_empty() {
                self.values.insert(name.clone(), Value { src, shape });
            }
        }
        Some(())
    }

    /// `x` must be a row `[1, k]`; returns `(src, k)`.
    fn row(&self, node: &pb::NodeProto, i: usize) -> Option<(Src, usize)> {
        let v = self.value(node, i)?;
        match v.shape.as_slice() {
            [1, k] => Some((v.src, *k)),
            _ => None,
        }
    }

    fn dense(
        &mut self,
        node: &pb::NodeProto,
        x: Src,
        w_kn: Vec<f32>,
        bias: Option<Vec<f32>>,
        k: usize,
        n: usize,
    ) -> Option<()> {
        let w = self.new_const(w_kn);
        let bias = bias.map(|b| self.new_const(b));
        let out = self.new_buf(n);
        self.steps.push(Step::Dense {
            x,
            w,
            bias,
            k,
            n,
            out,
        });
        self.define(node, Src::Buf(out), vec![1, n])
    }

    fn gemm(&mut self, node: &pb::NodeProto) -> Option<()> {
        if attr_int(node, "transA", 0) != 0 {
            return None;
        }
        let trans_b = attr_int(node, "transB", 0) != 0;
        let alpha = attr_float(node, "alpha", 1.0);
        let beta = attr_float(node, "beta", 1.0);
        let (x, k) = self.row(node, 0)?;
        let (b_shape, b) = self.constant(node, 1)?;
        let n = match (b_shape.as_slice(), trans_b) {
            ([bk, n], false) if *bk == k => *n,
            ([n, bk], true) if *bk == k => *n,
            _ => return None,
        };
        let mut w = vec![0.0f32; k * n];
        for i in 0..k {
            for j in 0..n {
                let v = if trans_b { b[j * k + i] } else { b[i * n + j] };
                w[i * n + j] = alpha * v;
            }
        }
        let bias = match node.input.get(2).filter(|s| !s.is_empty()) {
            None => None,
            Some(_) => {
                let (c_shape, c) = self.constant(node, 2)?;
                // C must broadcast to [1, n] without growing it.
                if broadcast(&c_shape, &[1, n])? != [1, n] {
                    return None;
                }
                Some(match c.len() {
                    1 => vec![beta * c[0]; n],
                    len if len == n => c.iter().map(|v| beta * v).collect(),
                    _ => return None,
                })
            }
        };
        self.dense(node, x, w, bias, k, n)
    }

    fn matmul(&mut self, node: &pb::NodeProto) -> Option<()> {
        let (x, k) = self.row(node, 0)?;
        let (b_shape, b) = self.constant(node, 1)?;
        let n = match b_shape.as_slice() {
            [bk, n] if *bk == k => *n,
            _ => return None,
        };
        let w = b.to_vec();
        self.dense(node, x, w, None, k, n)
    }

    fn unary(&mut self, node: &pb::NodeProto, op: Unary) -> Option<()> {
        let v = self.value(node, 0)?.clone();
        let out = self.new_buf(numel(&v.shape));
        self.steps.push(Step::Unary { op, x: v.src, out });
        self.define(node, Src::Buf(out), v.shape)
    }

    /// A binary step on two values; returns the output value.
    fn binary_values(&mut self, op: Binary, a: &Value, b: &Value) -> Option<Value> {
        let shape = broadcast(&a.shape, &b.shape)?;
        let len = numel(&shape);
        // Each operand is either the whole output (same layout: it broadcasts to
        // the output without growing) or a single value.
        for v in [a, b] {
            let n = numel(&v.shape);
            if n != 1 && n != len {
                return None;
            }
        }
        if let (Src::Const(ca), Src::Const(cb)) = (a.src, b.src) {
            // Fold constant arithmetic at compile time.
            let (da, db) = (&self.consts[ca], &self.consts[cb]);
            let data = (0..len)
                .map(|i| op.apply(da[i.min(da.len() - 1)], db[i.min(db.len() - 1)]))
                .collect();
            let c = self.new_const(data);
            return Some(Value {
                src: Src::Const(c),
                shape,
            });
        }
        let out = self.new_buf(len);
        self.steps.push(Step::Binary {
            op,
            a: a.src,
            b: b.src,
            out,
        });
        Some(Value {
            src: Src::Buf(out),
            shape,
        })
    }

    fn binary(&mut self, node: &pb::NodeProto, op: Binary) -> Option<()> {
        if node.input.len() != 2 {
            return None;
        }
        let a = self.value(node, 0)?.clone();
        let b = self.value(node, 1)?.clone();
        let v = self.binary_values(op, &a, &b)?;
        self.define(node, v.src, v.shape)
    }

    fn variadic(&mut self, node: &pb::NodeProto, op: Binary) -> Option<()> {
        let mut acc = self.value(node, 0)?.clone();
        for i in 1..node.input.len() {
            let next = self.value(node, i)?.clone();
            acc = self.binary_values(op, &acc, &next)?;
        }
        if node.input.len() == 1 {
            return self.unary(node, Unary::Identity);
        }
        self.define(node, acc.src, acc.shape)
    }

    fn layer_norm(&mut self, node: &pb::NodeProto) -> Option<()> {
        // Only the normalized output (no Mean / InvStdDev outputs), float32 stash.
        if attr_int(node, "stash_type", 1) != 1 {
            return None;
        }
        let x = self.value(node, 0)?.clone();
        let rank = x.shape.len();
        let width = *x.shape.last()?;
        if rank == 0 || numel(&x.shape) != width || !is_last_axis(attr_int(node, "axis", -1), rank)
        {
            return None;
        }
        let epsilon = attr_float(node, "epsilon", 1e-5);
        let (s_shape, s) = self.constant(node, 1)?;
        if numel(&s_shape) != width {
            return None;
        }
        let scale = s.to_vec();
        let bias = match node.input.get(2).filter(|s| !s.is_empty()) {
            None => None,
            Some(_) => {
                let (b_shape, b) = self.constant(node, 2)?;
                if numel(&b_shape) != width {
                    return None;
                }
                Some(b.to_vec())
            }
        };
        let scale = self.new_const(scale);
        let bias = bias.map(|b| self.new_const(b));
        let out = self.new_buf(width);
        self.steps.push(Step::LayerNorm {
            x: x.src,
            scale,
            bias,
            epsilon,
            out,
        });
        self.define(node, Src::Buf(out), x.shape)
    }

    fn reduce_mean(&mut self, node: &pb::NodeProto) -> Option<()> {
        let x = self.value(node, 0)?.clone();
        let rank = x.shape.len();
        let width = *x.shape.last()?;
        // One row: reducing the last axis (or every axis) is the row's mean.
        if numel(&x.shape) != width {
            return None;
        }
        let axes: Vec<i64> = match (attr(node, "axes"), node.input.get(1)) {
            (Some(a), _) => a.ints.clone(),
            // Opset 18 moved the axes to a (constant, int64) input.
            (None, Some(name)) if !name.is_empty() => self.ints.get(name)?.clone(),
            _ => (0..rank as i64).collect(),
        };
        self.reduce_mean_with(node, x, width, &axes)
    }

    fn reduce_mean_with(
        &mut self,
        node: &pb::NodeProto,
        x: Value,
        width: usize,
        axes: &[i64],
    ) -> Option<()> {
        let rank = x.shape.len();
        let normalized: Vec<usize> = axes
            .iter()
            .map(|&a| {
                let a = if a < 0 { a + rank as i64 } else { a };
                usize::try_from(a).ok().filter(|&a| a < rank)
            })
            .collect::<Option<_>>()?;
        // Every axis it reduces besides the last must have length 1.
        if !normalized.contains(&(rank - 1)) && width != 1 {
            return None;
        }
        let keepdims = attr_int(node, "keepdims", 1) != 0;
        let shape: Vec<usize> = (0..rank)
            .filter_map(|i| {
                if normalized.contains(&i) {
                    keepdims.then_some(1)
                } else {
                    Some(x.shape[i])
                }
            })
            .collect();
        let out = self.new_buf(1);
        self.steps.push(Step::Mean { x: x.src, out });
        self.define(node, Src::Buf(out), shape)
    }
}

impl Plan {
    /// Compiles `graph` for a feed-forward policy: one input `input` of
    /// `obs_dim` values and an output `output` of `out_len` values, or `None` if
    /// the graph uses anything this evaluator does not model.
    pub fn compile(
        graph: &pb::GraphProto,
        input: &str,
        obs_dim: usize,
        output: &str,
        out_len: usize,
    ) -> Option<Plan> {
        Self::compile_io(graph, &[(input, obs_dim)], &[(output, out_len)])
    }

    /// Compiles `graph` with these inputs and outputs (name, values; each a row
    /// `[1, width]`), or `None` if the graph uses anything this evaluator does not
    /// model.
    pub fn compile_io(
        graph: &pb::GraphProto,
        inputs: &[(&str, usize)],
        outputs: &[(&str, usize)],
    ) -> Option<Plan> {
        let mut c = Compiler {
            values: HashMap::new(),
            consts: Vec::new(),
            ints: HashMap::new(),
            bufs: Vec::new(),
            steps: Vec::new(),
        };
        for t in &graph.initializer {
            if t.data_type == INT64 {
                c.ints.insert(t.name.clone(), int_tensor(t)?);
                continue;
            }
            let (dims, data) = float_tensor(t)?;
            let k = c.new_const(data);
            c.values.insert(
                t.name.clone(),
                Value {
                    src: Src::Const(k),
                    shape: dims,
                },
            );
        }
        let mut input_bufs = Vec::with_capacity(inputs.len());
        for &(name, width) in inputs {
            let buf = c.new_buf(width);
            input_bufs.push(buf);
            c.values.insert(
                name.to_string(),
                Value {
                    src: Src::Buf(buf),
                    shape: vec![1, width],
                },
            );
        }
        for node in &graph.node {
            c.node(node)?;
        }
        let mut output_srcs = Vec::with_capacity(outputs.len());
        for &(name, len) in outputs {
            let out = c.values.get(name)?;
            if numel(&out.shape) != len {
                return None;
            }
            output_srcs.push((out.src, len));
        }
        Some(Plan {
            bufs: c.bufs.iter().map(|&n| vec![0.0; n]).collect(),
            consts: c.consts,
            steps: c.steps,
            inputs: input_bufs,
            outputs: output_srcs,
        })
    }

    /// Evaluates a feed-forward plan on `obs` (exactly `obs_dim` values) into
    /// `out` (exactly the output's length). Allocates nothing.
    pub fn run(&mut self, obs: &[f32], out: &mut [f32]) {
        self.run_io(&[obs], &mut [out]);
    }

    /// Evaluates the plan: `inputs` and `outputs` in `compile_io`'s order and
    /// widths. Allocates nothing. An output may be the same vector as an input
    /// of the next call (a recurrent state): inputs are copied in first.
    pub fn run_io(&mut self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        for (&buf, values) in self.inputs.iter().zip(inputs) {
            self.bufs[buf].copy_from_slice(values);
        }
        for step in &self.steps {
            if let Step::Lstm {
                gates, out, out_c, ..
            } = *step
            {
                let mut g = std::mem::take(&mut self.bufs[gates]);
                let mut h = std::mem::take(&mut self.bufs[out]);
                let mut c = std::mem::take(&mut self.bufs[out_c]);
                lstm_step(step, &self.bufs, &self.consts, &mut g, &mut h, &mut c);
                self.bufs[gates] = g;
                self.bufs[out] = h;
                self.bufs[out_c] = c;
                continue;
            }
            let o = match *step {
                Step::Dense { out, .. }
                | Step::Unary { out, .. }
                | Step::Binary { out, .. }
                | Step::LayerNorm { out, .. }
                | Step::Mean { out, .. }
                | Step::Concat { out, .. }
                | Step::Lstm { out, .. } => out,
            };
            // Take the output buffer out so the inputs can be borrowed beside it
            // (moving a Vec does not allocate).
            let mut dst = std::mem::take(&mut self.bufs[o]);
            eval(step, &self.bufs, &self.consts, &mut dst);
            self.bufs[o] = dst;
        }
        for ((src_of, len), target) in self.outputs.iter().zip(outputs.iter_mut()) {
            let result = match *src_of {
                Src::Buf(b) => &self.bufs[b],
                Src::Const(c) => &self.consts[c],
            };
            target.copy_from_slice(&result[..*len]);
        }
    }
}

/// One LSTM step of a [`Step::Lstm`] into `gates` (scratch), `h` and `c`.
fn lstm_step(
    step: &Step,
    bufs: &[Vec<f32>],
    consts: &[Vec<f32>],
    gates: &mut [f32],
    h_out: &mut [f32],
    c_out: &mut [f32],
) {
    let Step::Lstm {
        x,
        h,
        c,
        w,
        r,
        bias,
        inputs,
        hidden,
        ..
    } = *step
    else {
        return;
    };
    let (x, h, c) = (
        src(x, bufs, consts),
        src(h, bufs, consts),
        src(c, bufs, consts),
    );
    gates.copy_from_slice(&consts[bias]);
    dense(x, &consts[w], inputs, 4 * hidden, gates);
    dense(h, &consts[r], hidden, 4 * hidden, gates);
    let sigmoid = |v: f32| 1.0 / (1.0 + (-v).exp());
    for j in 0..hidden {
        let (i, o, f, cand) = (
            sigmoid(gates[j]),
            sigmoid(gates[hidden + j]),
            sigmoid(gates[2 * hidden + j]),
            tanh(gates[3 * hidden + j]),
        );
        let c_next = f * c[j] + i * cand;
        c_out[j] = c_next;
        h_out[j] = o * tanh(c_next);
    }
}

fn src<'a>(s: Src, bufs: &'a [Vec<f32>], consts: &'a [Vec<f32>]) -> &'a [f32] {
    match s {
        Src::Buf(b) => &bufs[b],
        Src::Const(c) => &consts[c],
    }
}

fn eval(step: &Step, bufs: &[Vec<f32>], consts: &[Vec<f32>], dst: &mut [f32]) {
    match *step {
        Step::Dense {
            x, w, bias, k, n, ..
        } => {
            let x = src(x, bufs, consts);
            let w = &consts[w];
            match bias {
                Some(b) => dst.copy_from_slice(&consts[b]),
                None => dst.fill(0.0),
            }
            dense(x, w, k, n, dst);
        }
        Step::Unary { op, x, .. } => {
            let x = src(x, bufs, consts);
            for (d, &v) in dst.iter_mut().zip(x) {
                *d = match op {
                    Unary::Relu => {
                        if v > 0.0 || v.is_nan() {
                            v
                        } else {
                            0.0
                        }
                    }
                    Unary::Tanh => tanh(v),
                    Unary::Sigmoid => 1.0 / (1.0 + (-v).exp()),
                    Unary::Identity => v,
                };
            }
        }
        Step::Binary { op, a, b, .. } => {
            let (a, b) = (src(a, bufs, consts), src(b, bufs, consts));
            match (a.len(), b.len()) {
                (la, lb) if la == lb => {
                    for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
                        *d = op.apply(x, y);
                    }
                }
                (1, _) => {
                    let x = a[0];
                    for (d, &y) in dst.iter_mut().zip(b) {
                        *d = op.apply(x, y);
                    }
                }
                _ => {
                    let y = b[0];
                    for (d, &x) in dst.iter_mut().zip(a) {
                        *d = op.apply(x, y);
                    }
                }
            }
        }
        Step::LayerNorm {
            x,
            scale,
            bias,
            epsilon,
            ..
        } => {
            let x = src(x, bufs, consts);
            let n = x.len() as f32;
            let mean = x.iter().sum::<f32>() / n;
            let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
            let inv = 1.0 / (var + epsilon).sqrt();
            let scale = &consts[scale];
            for ((d, &v), &s) in dst.iter_mut().zip(x).zip(scale) {
                *d = (v - mean) * inv * s;
            }
            if let Some(b) = bias {
                for (d, &b) in dst.iter_mut().zip(&consts[b]) {
                    *d += b;
                }
            }
        }
        Step::Mean { x, .. } => {
            let x = src(x, bufs, consts);
            dst[0] = x.iter().sum::<f32>() / x.len() as f32;
        }
        Step::Concat { ref parts, .. } => {
            let mut at = 0;
            for &part in parts {
                let values = src(part, bufs, consts);
                dst[at..at + values.len()].copy_from_slice(values);
                at += values.len();
            }
        }
        // Two outputs: run by `run_io` through `lstm_step`.
        Step::Lstm { .. } => {}
    }
}

/// `dst += x · W` for `W` stored `[k][n]`, on the widest vector unit the CPU has.
fn dense(x: &[f32], w: &[f32], k: usize, n: usize, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above), the only
            // requirement of a `target_feature` function.
            unsafe { dense_avx2(x, w, k, n, dst) };
            return;
        }
    }
    dense_portable(x, w, k, n, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dense_avx2(x: &[f32], w: &[f32], k: usize, n: usize, dst: &mut [f32]) {
    dense_portable(x, w, k, n, dst)
}

/// Four rows of `W` per pass over `dst` (a quarter of the loads and stores of one
/// row at a time); the inner loops have no reduction, so they vectorize.
#[inline(always)]
fn dense_portable(x: &[f32], w: &[f32], k: usize, n: usize, dst: &mut [f32]) {
    let dst = &mut dst[..n];
    let w = &w[..k * n];
    let blocks = k / 4;
    for (b, rows) in w.chunks_exact(4 * n).enumerate().take(blocks) {
        let (x0, x1, x2, x3) = (x[4 * b], x[4 * b + 1], x[4 * b + 2], x[4 * b + 3]);
        let (r0, rest) = rows.split_at(n);
        let (r1, rest) = rest.split_at(n);
        let (r2, r3) = rest.split_at(n);
        for ((((d, &a), &b), &c), &e) in dst.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3) {
            *d += x0 * a + x1 * b + x2 * c + x3 * e;
        }
    }
    for i in 4 * blocks..k {
        let xi = x[i];
        for (d, &wij) in dst.iter_mut().zip(&w[i * n..(i + 1) * n]) {
            *d += xi * wij;
        }
    }
}

/// tanh as a rational function (odd numerator of degree 13 over an even
/// denominator of degree 6, the coefficients Eigen uses for float), exact to a few
/// float ulps and branch-free, so a layer of it vectorizes; libm's `tanhf` costs
/// tens of nanoseconds a value and dominated small tanh networks. Public so the
/// trainer's LSTM cell computes its gates with the same function.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    const A1: f32 = 4.893_524_6e-3;
    const A3: f32 = 6.372_619_5e-4;
    const A5: f32 = 1.485_722_35e-5;
    const A7: f32 = 5.122_297_3e-8;
    const A9: f32 = -8.604_672e-11;
    const A11: f32 = 2.000_188e-13;
    const A13: f32 = -2.760_768_4e-16;
    const B0: f32 = 4.893_525e-3;
    const B2: f32 = 2.268_434_7e-3;
    const B4: f32 = 1.185_347_1e-4;
    const B6: f32 = 1.198_258_4e-6;
    if x.is_nan() {
        return x;
    }
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let p = ((((((A13 * x2 + A11) * x2 + A9) * x2 + A7) * x2 + A5) * x2 + A3) * x2 + A1) * x;
    let q = ((B6 * x2 + B4) * x2 + B2) * x2 + B0;
    // Near 0, tanh(x) = x to float precision.
    if x.abs() < 4e-4 {
        x
    } else {
        p / q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rational_tanh_is_within_a_few_ulps_of_libm() {
        let mut worst = 0.0f32;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4; // -20 .. 20
            let (ours, libm) = (tanh(x), x.tanh());
            worst = worst.max((ours - libm).abs() / libm.abs().max(f32::MIN_POSITIVE));
        }
        assert!(worst < 1e-6, "relative error {worst}");
        assert!(tanh(f32::NAN).is_nan());
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
    }

    #[test]
    fn dense_matches_the_naive_product_for_every_row_remainder() {
        for k in 1..=9 {
            let n = 7;
            let x: Vec<f32> = (0..k).map(|i| i as f32 * 0.5 - 1.0).collect();
            let w: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut got = vec![1.0f32; n];
            dense(&x, &w, k, n, &mut got);
            for j in 0..n {
                let want = 1.0 + (0..k).map(|i| x[i] * w[i * n + j]).sum::<f32>();
                assert!((got[j] - want).abs() < 1e-5, "k {k}: {got:?}");
            }
        }
    }

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast(&[1, 4], &[4]), Some(vec![1, 4]));
        assert_eq!(broadcast(&[1, 4], &[1, 1]), Some(vec![1, 4]));
        assert_eq!(broadcast(&[1, 4], &[4, 1]), Some(vec![4, 4]));
        assert_eq!(broadcast(&[1, 4], &[3]), None);
    }

    #[test]
    fn binary_ops_propagate_nan_in_min_and_max() {
        assert!(Binary::Min.apply(f32::NAN, 1.0).is_nan());
        assert!(Binary::Max.apply(1.0, f32::NAN).is_nan());
        assert_eq!(Binary::Min.apply(2.0, 1.0), 1.0);
        assert_eq!(Binary::Sub.apply(2.0, 1.0), 1.0);
    }
}
