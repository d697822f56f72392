"""Producers: turn what the Electrum servers report into Chainwire events.

Pure cores (no I/O, no clock): ``pow`` (compact bits, targets, work, retarget rules),
``block_header``, ``chain_updates`` (the result types) and ``headers`` (``HeaderChain``,
the best tip) that the block producer (``blocks``, ``block_runs``) drives;
``address_diff`` (history -> status changes), ``rounds`` (a round's named types and pure
steps), ``amounts`` (received / sent sats) and ``watched`` (one ``WatchedAddress`` per
watched address) that the address producer (``addresses``, ``address_round``,
``address_log``) drives. Producers keep their state through the store's narrow
``ProducerState`` seam and hand events to an ``EventSink`` (``base``, ``sink``).
"""
