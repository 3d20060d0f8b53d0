"""A test strategy whose decisions are scripted in the volume column.

volume = 1 long, 3 short, 2 exit, 0 nothing. Parameter ``order_type`` (0 market, 1 limit,
2 stop) and ``offset``: limit/stop price = close * (1 + offset).
"""

from numba import njit

from framework.enums import ACTION_EXIT, ACTION_LONG, ACTION_SHORT, INTENT_ACTION, INTENT_ORDER_TYPE, INTENT_PRICE
from framework.strategy import Param, Strategy

import numpy as np


@njit(cache=True)
def init_nb(p):
    return (np.zeros(1),)


@njit(cache=True)
def decide_nb(state, o, h, l, c, v, pos, p, intent):
    code = int(v)
    if code == 1:
        intent[INTENT_ACTION] = ACTION_LONG
    elif code == 3:
        intent[INTENT_ACTION] = ACTION_SHORT
    elif code == 2:
        intent[INTENT_ACTION] = ACTION_EXIT
    intent[INTENT_ORDER_TYPE] = p[0]
    intent[INTENT_PRICE] = c * (1.0 + p[1])


class Scripted(Strategy):
    name = "scripted"
    order_type = Param(0, low=0, high=2)
    offset = Param(0.0, low=-0.5, high=0.5)
    init_nb = staticmethod(init_nb)
    decide_nb = staticmethod(decide_nb)
