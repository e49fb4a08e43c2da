//! Unpadding for the backbones' forward passes: the linear layers, norms, residuals and
//! dropout (nearly all the work) run on the real tokens of a right-padded `(b, s)` batch
//! only, as `(t, c)` matrices; attention alone needs the `(b, s)` layout and gets the rows
//! scattered into it (zeros at padding, which the key mask hides) and gathered back. Row
//! results equal the padded computation's. A batch without padding keeps the plain layout.

use tch::{Kind, Tensor};

/// The real tokens of one batch.
pub struct Unpad {
    /// Flat indices `(t,)` of the real tokens in the `(b * s)` layout.
    real: Tensor,
    b: i64,
    s: i64,
    /// False when every token is real (nothing to gather or scatter).
    active: bool,
}

impl Unpad {
    /// For `mask (b, s)` (1 = real token).
    pub fn new(mask: &Tensor, b: i64, s: i64) -> Self {
        let real = mask.view([-1]).nonzero().squeeze_dim(1);
        let active = real.size()[0] < b * s;
        Unpad { real, b, s, active }
    }

    /// The real tokens' entries `(t,)` of a `(b, s)` tensor (token ids, say).
    pub fn tokens(&self, m: &Tensor) -> Tensor {
        self.from_padded(&m.view([-1]))
    }

    /// The position in its row of each real token, `(t,)` int64.
    pub fn positions(&self) -> Tensor {
        if self.active {
            self.real.remainder(self.s)
        } else {
            Tensor::arange(self.s, (Kind::Int64, self.real.device())).repeat([self.b])
        }
    }

    /// `(t, c)` rows into the `(b * s, c)` layout, zeros at padding.
    pub fn to_padded(&self, m: &Tensor) -> Tensor {
        if self.active {
            let c = m.size()[1];
            Tensor::zeros([self.b * self.s, c], (m.kind(), m.device())).index_copy(0, &self.real, m)
        } else {
            m.shallow_clone()
        }
    }

    /// The real tokens' rows `(t, ...)` of a `(b * s, ...)` tensor.
    pub fn from_padded(&self, m: &Tensor) -> Tensor {
        if self.active {
            m.index_select(0, &self.real)
        } else {
            m.shallow_clone()
        }
    }
}
