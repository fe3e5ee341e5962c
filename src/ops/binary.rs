//! `+ - * /` between tensors (broadcasting) and with scalars, and unary `-`.
//!
//! Gradients of broadcast inputs are summed back to their shapes by
//! [`Tensor::sum_to`], the one shared reduce-back.

use crate::autograd::node::{record, Role};
use crate::layout::dims;
use crate::ops::kernels::{
    map, map_reusing_buffer, map_reusing_leaf, zip_map, zip_reusing_buffer, zip_reusing_leaf,
};
use crate::storage::Value;
use crate::{Float, Tensor};
use smallvec::{smallvec, SmallVec};
use std::ops::{Add, Div, Mul, Neg, Sub};

// d(a + b) = da + db
#[track_caller]
fn add<T: Float>(a: &Tensor<T>, b: &Tensor<T>, out: Option<Value<T>>) -> Tensor<T> {
    let out = match out {
        Some(out) => out,
        None => zip_map("add", a, b, |x, y| x + y),
    };
    let (sa, sb) = (dims(a.shape()), dims(b.shape()));
    record("AddBackward", &[a, b], out, &[], move |ctx, g| {
        smallvec![
            ctx.needs_grad(0).then(|| g.sum_to(&sa)),
            ctx.needs_grad(1).then(|| g.sum_to(&sb)),
        ]
    })
}

// d(a - b) = da - db
#[track_caller]
fn sub<T: Float>(a: &Tensor<T>, b: &Tensor<T>, out: Option<Value<T>>) -> Tensor<T> {
    let out = match out {
        Some(out) => out,
        None => zip_map("sub", a, b, |x, y| x - y),
    };
    let (sa, sb) = (dims(a.shape()), dims(b.shape()));
    record("SubBackward", &[a, b], out, &[], move |ctx, g| {
        smallvec![
            ctx.needs_grad(0).then(|| g.sum_to(&sa)),
            ctx.needs_grad(1).then(|| (-g).sum_to(&sb)),
        ]
    })
}

/// Saves input `i` only when the other input needs a gradient (the only
/// formula that reads it): `w * x` with a constant `w` saves no `x`.
#[track_caller]
fn save_for_other<T: Float>(a: &Tensor<T>, b: &Tensor<T>) -> SmallVec<[Role; 2]> {
    let mut saves = SmallVec::new();
    if b.requires_grad() {
        saves.push(Role::Input(0));
    }
    if a.requires_grad() {
        saves.push(Role::Input(1));
    }
    saves
}

// d(a * b) = b da + a db
#[track_caller]
fn mul<T: Float>(a: &Tensor<T>, b: &Tensor<T>, out: Option<Value<T>>) -> Tensor<T> {
    let out = match out {
        Some(out) => out,
        None => zip_map("mul", a, b, |x, y| x * y),
    };
    let (sa, sb) = (dims(a.shape()), dims(b.shape()));
    record(
        "MulBackward",
        &[a, b],
        out,
        &save_for_other(a, b),
        move |ctx, g| {
            smallvec![
                ctx.needs_grad(0).then(|| (&g * ctx.input(1)).sum_to(&sa)),
                ctx.needs_grad(1).then(|| (g * ctx.input(0)).sum_to(&sb)),
            ]
        },
    )
}

// d(a / b) = da / b - a db / b²
#[track_caller]
fn div<T: Float>(a: &Tensor<T>, b: &Tensor<T>, out: Option<Value<T>>) -> Tensor<T> {
    let out = match out {
        Some(out) => out,
        None => zip_map("div", a, b, |x, y| x / y),
    };
    let (sa, sb) = (dims(a.shape()), dims(b.shape()));
    let saves: &[Role] = if b.requires_grad() {
        &[Role::Input(0), Role::Input(1)]
    } else {
        &[Role::Input(1)]
    };
    record("DivBackward", &[a, b], out, saves, move |ctx, g| {
        let b = ctx.input(1);
        smallvec![
            ctx.needs_grad(0).then(|| (&g / &b).sum_to(&sa)),
            ctx.needs_grad(1)
                .then(|| (-(g * ctx.input(0)) / (&b * &b)).sum_to(&sb)),
        ]
    })
}

// d(-a) = -da
#[track_caller]
fn neg<T: Float>(a: &Tensor<T>, out: Option<Value<T>>) -> Tensor<T> {
    let out = out.unwrap_or_else(|| map(&a.data(), |x| -x));
    record("NegBackward", &[a], out, &[], |_, g| smallvec![Some(-g)])
}

// d(a + s) = da
#[track_caller]
fn add_scalar<T: Float>(a: &Tensor<T>, s: T, out: Option<Value<T>>) -> Tensor<T> {
    let out = out.unwrap_or_else(|| map(&a.data(), |x| x + s));
    record("AddBackward", &[a], out, &[], |_, g| smallvec![Some(g)])
}

// d(a - s) = da
#[track_caller]
fn sub_scalar<T: Float>(a: &Tensor<T>, s: T, out: Option<Value<T>>) -> Tensor<T> {
    let out = out.unwrap_or_else(|| map(&a.data(), |x| x - s));
    record("SubBackward", &[a], out, &[], |_, g| smallvec![Some(g)])
}

// d(s - a) = -da
#[track_caller]
fn rsub_scalar<T: Float>(a: &Tensor<T>, s: T, out: Option<Value<T>>) -> Tensor<T> {
    let out = out.unwrap_or_else(|| map(&a.data(), |x| s - x));
    record("RsubBackward", &[a], out, &[], |_, g| smallvec![Some(-g)])
}

// d(a s) = s da
#[track_caller]
fn mul_scalar<T: Float>(a: &Tensor<T>, s: T, out: Option<Value<T>>) -> Tensor<T> {
    let out = out.unwrap_or_else(|| map(&a.data(), |x| x * s));
    record("MulBackward", &[a], out, &[], move |_, g| smallvec![Some(g * s)])
}

// d(a / s) = da / s
#[track_caller]
fn div_scalar<T: Float>(a: &Tensor<T>, s: T, out: Option<Value<T>>) -> Tensor<T> {
    let out = out.unwrap_or_else(|| map(&a.data(), |x| x / s));
    record("DivBackward", &[a], out, &[], move |_, g| smallvec![Some(g / s)])
}

// d(s / a) = -s da / a²
#[track_caller]
fn rdiv_scalar<T: Float>(a: &Tensor<T>, s: T, out: Option<Value<T>>) -> Tensor<T> {
    let out = out.unwrap_or_else(|| map(&a.data(), |x| s / x));
    record("DivBackward", &[a], out, &[Role::Input(0)], move |ctx, g| {
        let a = ctx.input(0);
        smallvec![Some(g * (-s) / (&a * &a))]
    })
}

impl<T: Float> Tensor<T> {
    /// `selfᵉ` elementwise with a tensor exponent (broadcasting;
    /// `torch.pow(x, e)`).
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let x = Tensor::from_vec(vec![2.0f64, 3.0], &[2]);
    /// assert_eq!(x.pow(&Tensor::from_vec(vec![3.0, 2.0], &[2])).to_vec(), vec![8.0, 9.0]);
    /// ```
    ///
    /// **Panics** if the shapes do not broadcast.
    #[track_caller]
    pub fn pow(&self, exponent: &Tensor<T>) -> Tensor<T> {
        // d aᵇ = b aᵇ⁻¹ da + aᵇ ln(a) db, with PyTorch's zeros where the
        // formulas meet 0 * inf: the da part is 0 where b = 0 (computed as
        // b a^(b - 1 + [b = 0])), the db part where a = 0 and b >= 0
        // (computed as ln(a + m) (1 - m) with m the mask of those places).
        let out = zip_map("pow", self, exponent, T::powf);
        let (sa, sb) = (dims(self.shape()), dims(exponent.shape()));
        let saves = [Role::Input(0), Role::Input(1), Role::Output];
        record("PowBackward", &[self, exponent], out, &saves, move |ctx, g| {
            let (a, b) = (ctx.input(0), ctx.input(1));
            let ga = ctx.needs_grad(0).then(|| {
                let zero_exponent = b.constant_map(|e| if e == T::zero() { T::one() } else { T::zero() });
                (&g * &b * a.pow(&(&b - T::one() + zero_exponent))).sum_to(&sa)
            });
            let gb = ctx.needs_grad(1).then(|| {
                let zero_base = Tensor::from_value(zip_map("pow", &a, &b, |x, e| {
                    if x == T::zero() && e >= T::zero() {
                        T::one()
                    } else {
                        T::zero()
                    }
                }));
                let ln_a = (&a + &zero_base).ln() * (-&zero_base + T::one());
                (g * ctx.output() * ln_a).sum_to(&sb)
            });
            smallvec![ga, gb]
        })
    }

    /// The elementwise maximum of two tensors (broadcasting; NaN wins, as
    /// PyTorch). At ties each input gets half the gradient.
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 5.0], &[2]);
    /// assert_eq!(a.maximum(&Tensor::from_vec(vec![3.0, 2.0], &[2])).to_vec(), vec![3.0, 5.0]);
    /// ```
    ///
    /// **Panics** if the shapes do not broadcast.
    #[track_caller]
    pub fn maximum(&self, other: &Tensor<T>) -> Tensor<T> {
        self.extremum("maximum", "MaximumBackward", other, |x, y| x > y)
    }

    /// The elementwise minimum of two tensors; see [`maximum`](Tensor::maximum).
    ///
    /// ```
    /// use tapegrad::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 5.0], &[2]);
    /// assert_eq!(a.minimum(&Tensor::from_vec(vec![3.0, 2.0], &[2])).to_vec(), vec![1.0, 2.0]);
    /// ```
    ///
    /// **Panics** if the shapes do not broadcast.
    #[track_caller]
    pub fn minimum(&self, other: &Tensor<T>) -> Tensor<T> {
        self.extremum("minimum", "MinimumBackward", other, |x, y| x < y)
    }

    /// `maximum` or `minimum`: `wins(x, y)` says when `x` is picked over `y`.
    #[track_caller]
    fn extremum(
        &self,
        op: &'static str,
        name: &'static str,
        other: &Tensor<T>,
        wins: fn(T, T) -> bool,
    ) -> Tensor<T> {
        // At a tie the second operand, as PyTorch (maximum(-0, 0) is 0,
        // maximum(0, -0) is -0).
        let pick = move |x: T, y: T| {
            if x.is_nan() || y.is_nan() {
                T::nan()
            } else if wins(x, y) {
                x
            } else {
                y
            }
        };
        let out = zip_map(op, self, other, pick);
        let (sa, sb) = (dims(self.shape()), dims(other.shape()));
        // Each input's share of the gradient is a step function of
        // d = sign(self - other), compared (not subtracted: inf - inf is
        // NaN, yet inf ties inf): 1 where it wins, 0 where it loses (a zero
        // even for a NaN gradient, as PyTorch's masked_fill), ½ at ties,
        // and 1 for both where an input is NaN (as PyTorch).
        let share = move |mine: bool| {
            move |d: T| {
                let d = if mine { d } else { -d };
                if d.is_nan() || wins(d, T::zero()) {
                    Some(T::one())
                } else if d == T::zero() {
                    Some(T::of(0.5))
                } else {
                    None
                }
            }
        };
        let (share_a, share_b) = (share(true), share(false));
        let saves = [Role::Input(0), Role::Input(1)];
        record(name, &[self, other], out, &saves, move |ctx, g| {
            let d = Tensor::from_value(zip_map(op, &ctx.input(0), &ctx.input(1), |x, y| {
                if x.is_nan() || y.is_nan() {
                    T::nan()
                } else if x == y {
                    T::zero()
                } else if x > y {
                    T::one()
                } else {
                    -T::one()
                }
            }));
            smallvec![
                ctx.needs_grad(0)
                    .then(|| g.clone().mul_step(&d, share_a).sum_to(&sa)),
                ctx.needs_grad(1).then(|| g.mul_step(&d, share_b).sum_to(&sb)),
            ]
        })
    }
}

/// The four owned/borrowed pairs of an operator between tensors, and the
/// tensor–scalar forms with the scalar on the right. `$f` is the operator
/// on elements. An owned operand that no one else can see is written over
/// with the result instead of allocating another buffer: with no op
/// recorded, the operand itself becomes the result ([`map_reusing_leaf`],
/// [`zip_reusing_leaf`]); a recorded op takes over its buffer ([`map_reusing_buffer`],
/// [`zip_reusing_buffer`]) unless it saves that operand for its backward, which
/// `$saves_lhs(rhs)` / `$saves_rhs(lhs)` say.
macro_rules! tensor_operator {
    ($Trait:ident, $method:ident, $tensor_fn:ident, $scalar_fn:ident, $f:expr, $saves_lhs:expr, $saves_rhs:expr) => {
        // `#[track_caller]` on each, and `match`es rather than closures
        // (it does not reach into one), so that a shape error points at
        // the user's `a + b`.
        impl<T: Float> $Trait<&Tensor<T>> for &Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $method(self, rhs: &Tensor<T>) -> Tensor<T> {
                $tensor_fn(self, rhs, None)
            }
        }
        impl<T: Float> $Trait<Tensor<T>> for &Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $method(self, rhs: Tensor<T>) -> Tensor<T> {
                let f = |y, x| $f(x, y);
                match zip_reusing_leaf(rhs, self, f) {
                    Ok(done) => done,
                    Err(mut rhs) => {
                        let out = match $saves_rhs(self) {
                            true => None,
                            false => zip_reusing_buffer(&mut rhs, self, f),
                        };
                        $tensor_fn(self, &rhs, out)
                    }
                }
            }
        }
        impl<T: Float> $Trait<&Tensor<T>> for Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $method(self, rhs: &Tensor<T>) -> Tensor<T> {
                match zip_reusing_leaf(self, rhs, $f) {
                    Ok(done) => done,
                    Err(mut lhs) => {
                        let out = match $saves_lhs(rhs) {
                            true => None,
                            false => zip_reusing_buffer(&mut lhs, rhs, $f),
                        };
                        $tensor_fn(&lhs, rhs, out)
                    }
                }
            }
        }
        impl<T: Float> $Trait<Tensor<T>> for Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $method(self, rhs: Tensor<T>) -> Tensor<T> {
                self.$method(&rhs)
            }
        }
        impl<T: Float> $Trait<T> for &Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $method(self, rhs: T) -> Tensor<T> {
                $scalar_fn(self, rhs, None)
            }
        }
        impl<T: Float> $Trait<T> for Tensor<T> {
            type Output = Tensor<T>;
            #[track_caller]
            fn $method(self, rhs: T) -> Tensor<T> {
                let f = |x| $f(x, rhs);
                match map_reusing_leaf(self, f) {
                    Ok(done) => done,
                    Err(mut lhs) => {
                        let out = map_reusing_buffer(&mut lhs, f);
                        $scalar_fn(&lhs, rhs, out)
                    }
                }
            }
        }
    };
}

/// Whether an op saves an operand for its backward, given the other one.
#[track_caller]
fn never<T: Float>(_: &Tensor<T>) -> bool {
    false
}

/// `a * b` and `a / b` save `a` when `b` needs a gradient.
#[track_caller]
fn if_grad<T: Float>(other: &Tensor<T>) -> bool {
    other.requires_grad()
}

#[track_caller]
fn always<T: Float>(_: &Tensor<T>) -> bool {
    true
}

tensor_operator!(Add, add, add, add_scalar, |x: T, y: T| x + y, never, never);
tensor_operator!(Sub, sub, sub, sub_scalar, |x: T, y: T| x - y, never, never);
tensor_operator!(Mul, mul, mul, mul_scalar, |x: T, y: T| x * y, if_grad, if_grad);
tensor_operator!(Div, div, div, div_scalar, |x: T, y: T| x / y, if_grad, always);

/// A scalar on the left, for `f32` and `f64` (the orphan rule forbids a
/// generic impl): `$f(tensor, scalar)` computes `scalar op tensor`, as
/// `$op` does on elements; `$saves` says whether it saves the tensor.
macro_rules! scalar_operator {
    ($S:ty, $Trait:ident, $method:ident, $f:ident, $op:expr, $saves:expr) => {
        impl $Trait<&Tensor<$S>> for $S {
            type Output = Tensor<$S>;
            fn $method(self, rhs: &Tensor<$S>) -> Tensor<$S> {
                $f(rhs, self, None)
            }
        }
        impl $Trait<Tensor<$S>> for $S {
            type Output = Tensor<$S>;
            fn $method(self, rhs: Tensor<$S>) -> Tensor<$S> {
                let f = |x| $op(self, x);
                map_reusing_leaf(rhs, f).unwrap_or_else(|mut rhs| {
                    let out = if $saves {
                        None
                    } else {
                        map_reusing_buffer(&mut rhs, f)
                    };
                    $f(&rhs, self, out)
                })
            }
        }
    };
}

scalar_operator!(f32, Add, add, add_scalar, |s: f32, x: f32| s + x, false);
scalar_operator!(f32, Sub, sub, rsub_scalar, |s: f32, x: f32| s - x, false);
scalar_operator!(f32, Mul, mul, mul_scalar, |s: f32, x: f32| s * x, false);
scalar_operator!(f32, Div, div, rdiv_scalar, |s: f32, x: f32| s / x, true);
scalar_operator!(f64, Add, add, add_scalar, |s: f64, x: f64| s + x, false);
scalar_operator!(f64, Sub, sub, rsub_scalar, |s: f64, x: f64| s - x, false);
scalar_operator!(f64, Mul, mul, mul_scalar, |s: f64, x: f64| s * x, false);
scalar_operator!(f64, Div, div, rdiv_scalar, |s: f64, x: f64| s / x, true);

impl<T: Float> Neg for &Tensor<T> {
    type Output = Tensor<T>;
    #[track_caller]
    fn neg(self) -> Tensor<T> {
        neg(self, None)
    }
}

impl<T: Float> Neg for Tensor<T> {
    type Output = Tensor<T>;
    #[track_caller]
    fn neg(self) -> Tensor<T> {
        map_reusing_leaf(self, |x| -x).unwrap_or_else(|mut a| {
            let out = map_reusing_buffer(&mut a, |x| -x);
            neg(&a, out)
        })
    }
}
