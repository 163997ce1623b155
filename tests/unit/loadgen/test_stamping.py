from raybench.loadgen.stamping import StampingResponseHandler, make_connector


async def test_connections_stamp_reads_with_this_aiohttp():
    """If an aiohttp upgrade moves the protocol factory, this says so instead of a silent
    fall-back to later (coroutine wake-up) time stamps."""
    connector = make_connector(8)
    try:
        protocol = connector._factory()
        assert isinstance(protocol, StampingResponseHandler)
        protocol.data_received(b"")  # an empty read (a resume) is not a read
        assert protocol.t_data_ns == 0
    finally:
        await connector.close()
