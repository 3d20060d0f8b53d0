"""A test strategy whose decisions are scripted in the volume column.

volume = 1 long, 3 short, 2 exit, 0 nothing. Parameter ``order_type`` (0 market, 1 limit,
2 stop) and ``offset``: limit/stop price = close * (1 + offset).

A script code may also choose its own order type in its tens digit: ``10 + a`` is action ``a``
as a limit order, ``20 + a`` as a stop order (``11`` a buy limit, ``23`` a sell stop); a code
below 10 uses the ``order_type`` parameter. With ``gap`` > 0 the limit/stop price is placed
``gap`` (a fraction of the close) away from the close on the side the market has to reach:
below it for a buy limit or a sell stop, above it for a buy stop or a sell limit (``offset`` is
then ignored).
"""

import numpy as np
from numba import njit

from framework.enums import (
    ACTION_EXIT,
    ACTION_LONG,
    ACTION_SHORT,
    INTENT_ACTION,
    INTENT_ORDER_TYPE,
    INTENT_PRICE,
    ORDER_STOP,
)
from framework.strategy import Param, Strategy

ORDER_TYPE, OFFSET, GAP = 0, 1, 2


@njit(cache=True)
def init_nb(p):
    return (np.zeros(1),)


@njit(cache=True)
def decide_nb(state, o, h, l, c, v, pos, p, intent):
    code = int(v)
    action = code % 10
    order_type = code // 10 if code >= 10 else int(p[ORDER_TYPE])
    direction = 0.0
    if action == 1:
        intent[INTENT_ACTION] = ACTION_LONG
        direction = 1.0
    elif action == 3:
        intent[INTENT_ACTION] = ACTION_SHORT
        direction = -1.0
    elif action == 2:
        intent[INTENT_ACTION] = ACTION_EXIT
    intent[INTENT_ORDER_TYPE] = order_type
    if p[GAP] > 0.0:
        side = direction if order_type == ORDER_STOP else -direction
        intent[INTENT_PRICE] = c * (1.0 + side * p[GAP])
    else:
        intent[INTENT_PRICE] = c * (1.0 + p[OFFSET])


class Scripted(Strategy):
    name = "scripted"
    order_type = Param(0, low=0, high=2)
    offset = Param(0.0, low=-0.5, high=0.5)
    gap = Param(0.0, low=0.0, high=0.5)
    init_nb = staticmethod(init_nb)
    decide_nb = staticmethod(decide_nb)
