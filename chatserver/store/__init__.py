"""Store backends behind one interface (`chatserver.store.base.Store`)."""
