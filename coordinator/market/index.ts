/** The resource marketplace: provider offers, reliability, lease filters and the market summary. */
export { jobAcceptsWorkerSql, type LeaseFilterOptions, marketLeaseCondition } from './lease-filter.js';
export { marketSummary, networkStats } from './market-view.js';
export { marketMigrations } from './migrations.js';
export { activeOffers, type Offer, Offers, workerPricePerTflop } from './offers.js';
export { type Reliability, reliabilityFrom, reliabilityOf, reliabilityOfMany } from './reliability.js';
export { compareRank, marketWorkerRanking, type RankKey, rankKeys, type WorkerRankOptions } from './worker-rank.js';
