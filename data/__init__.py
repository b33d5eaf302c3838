"""Shipped data (prompt sets, judge templates and gold sets, the tiny policy's corpus, configs).

A package only so that the installed distribution carries it as ``prefwork.data``; code finds
it as the sibling folder of ``pipeline`` (``prefwork.pipeline.DATA_DIR``), in a clone and in a wheel alike.
"""
