"""Pure, picklable functions that the thread and process pools run.

Nothing here imports chatserver, asyncio or aiohttp: a worker process must be able to import
these modules cheaply and run them without an event loop.
"""
