"""Broker backends behind one interface (`chatserver.broker.base.Broker`)."""
