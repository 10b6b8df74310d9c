"""Small dense LPs solved with HiGHS (highspy), shared by the safety gate and volt/var."""

from __future__ import annotations

import highspy
import numpy as np


def solve_lp(c: np.ndarray, a_ub: np.ndarray, b_ub: np.ndarray, lb: np.ndarray,
             ub: np.ndarray) -> np.ndarray | None:
    """Minimise c·x subject to a_ub x <= b_ub and lb <= x <= ub; None when infeasible."""
    n = len(c)
    m = a_ub.shape[0]
    lp = highspy.HighsLp()
    lp.num_col_ = n
    lp.num_row_ = m
    lp.col_cost_ = np.asarray(c, float)
    lp.col_lower_ = np.asarray(lb, float)
    lp.col_upper_ = np.asarray(ub, float)
    lp.row_lower_ = np.full(m, -highspy.kHighsInf)
    lp.row_upper_ = np.asarray(b_ub, float)
    a = np.asarray(a_ub, float)
    nz = a != 0.0
    starts = np.r_[0, np.cumsum(nz.sum(axis=0))].astype(np.int32)
    rows = np.nonzero(nz.T)[1].astype(np.int32)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = starts
    lp.a_matrix_.index_ = rows
    lp.a_matrix_.value_ = a.T[nz.T]
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", 1.0)
    h.passModel(lp)
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return None
    return np.asarray(h.getSolution().col_value, float)
